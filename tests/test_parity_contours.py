"""MaxBoxAccV2's boxes are those of OpenCV's RETR_TREE contours (issue 24 §2): every 8-connected
component's outer border and every hole's inner border, as wsolevaluation's
``compute_bboxes_from_scoremaps`` boxes them (``cv2.findContours(..., RETR_TREE,
CHAIN_APPROX_SIMPLE)`` then ``cv2.boundingRect`` -> ``(x, y, x + w, y + h)`` clipped).

The expected boxes come from a plain flood fill written here (no scipy): components by 8-connected
breadth-first search; the background by 4-connected search from a zero frame around the image
(OpenCV pads it so); every other background region is a hole, and its border (Suzuki & Abe 1985,
8-connected foreground / 4-connected background) is the set of foreground pixels with a
4-neighbour in it, boxed by its extreme pixels. Plus hand-worked rings and nests.
"""

from collections import deque

import numpy as np
import pytest

from camexp.metrics.boxes import box_iou, component_boxes, stacked_component_boxes
from camexp.metrics.localization import ious_over_thresholds

N4 = ((-1, 0), (1, 0), (0, -1), (0, 1))
N8 = N4 + ((-1, -1), (-1, 1), (1, -1), (1, 1))


def flood(inside, start, steps, seen):
    """The region of ``inside`` pixels reachable from ``start`` with ``steps``."""
    height, width = inside.shape
    region, queue = [start], deque([start])
    seen[start] = True
    while queue:
        y, x = queue.popleft()
        for dy, dx in steps:
            q = (y + dy, x + dx)
            if 0 <= q[0] < height and 0 <= q[1] < width and inside[q] and not seen[q]:
                seen[q] = True
                region.append(q)
                queue.append(q)
    return region


def bounding_rect(points):
    """cv2.boundingRect as (x, y, w, h)."""
    ys, xs = zip(*points, strict=True)
    return min(xs), min(ys), max(xs) - min(xs) + 1, max(ys) - min(ys) + 1


def retr_tree_rects(mask, holes=True):
    """(x, y, w, h) of every contour: outer borders and hole borders (RETR_EXTERNAL: only the
    outer borders of the outermost components; here, with holes=False, of all components)."""
    height, width = mask.shape
    rects, seen = [], np.zeros_like(mask, dtype=bool)
    for p in zip(*np.nonzero(mask), strict=True):
        if not seen[p]:
            rects.append(bounding_rect(flood(mask, p, N8, seen)))
    if not holes:
        return rects
    framed = np.ones((height + 2, width + 2), dtype=bool)  # background, with the zero frame
    framed[1:-1, 1:-1] = ~mask
    seen = np.zeros_like(framed)
    flood(framed, (0, 0), N4, seen)  # the outside
    for p in zip(*np.nonzero(framed & ~seen), strict=True):
        if seen[p]:
            continue
        hole = flood(framed, p, N4, seen)
        border = {
            (y + dy - 1, x + dx - 1)  # image coordinates
            for y, x in hole
            for dy, dx in N4
            if mask[y + dy - 1, x + dx - 1]
        }
        rects.append(bounding_rect(border))
    return rects


def tight(rects):
    return sorted((x, y, x + w - 1, y + h - 1) for x, y, w, h in rects)


def wsol_best_ious(scoremap, gts, thresholds, holes=True):
    """BoxEvaluator.accumulate with compute_bboxes_from_scoremaps, contours from the flood fill."""
    height, width = scoremap.shape
    image = (scoremap * 255).astype(np.uint8)
    best = []
    for t in thresholds:
        rects = retr_tree_rects(image > int(t * np.max(image)), holes)
        boxes = [[x, y, min(x + w, width - 1), min(y + h, height - 1)] for x, y, w, h in rects]
        best.append(box_iou(np.array(boxes or [[0, 0, 0, 0]]), gts).max())
    return np.array(best)


def ring(size, outer, hole):
    """A square ring: foreground outer (x0, y0, x1, y1) minus hole (x0, y0, x1, y1), inclusive."""
    mask = np.zeros((size, size), dtype=bool)
    mask[outer[1] : outer[3] + 1, outer[0] : outer[2] + 1] = True
    mask[hole[1] : hole[3] + 1, hole[0] : hole[2] + 1] = False
    return mask


# ----------------------------------------------------------------------------- by hand
def test_a_rings_hole_is_boxed_one_pixel_beyond_the_hole():
    mask = ring(12, (0, 0, 11, 11), (3, 3, 8, 8))  # three pixels thick
    assert sorted(map(tuple, component_boxes(mask).tolist())) == [(0, 0, 11, 11), (2, 2, 9, 9)]
    # the object is the hole: the component's box scores 36/144, the hole's 36/64
    gt = np.array([[3, 3, 8, 8]])
    ious = box_iou(component_boxes(mask), gt).ravel()
    assert sorted(ious.tolist()) == pytest.approx([36 / 144, 36 / 64])


def test_nested_component_with_its_own_hole():
    mask = ring(16, (0, 0, 15, 15), (2, 2, 13, 13))
    mask |= ring(16, (4, 4, 11, 11), (6, 6, 9, 9))  # a ring inside the hole
    mask[7, 7] = True  # and a dot inside that ring's hole: it splits nothing (4-connected hole)
    got = sorted(map(tuple, component_boxes(mask).tolist()))
    # outer ring, its hole (2..13 grown), inner ring, its hole (6..9 grown), the dot
    assert got == [(0, 0, 15, 15), (1, 1, 14, 14), (4, 4, 11, 11), (5, 5, 10, 10), (7, 7, 7, 7)]


def test_diagonal_gap_is_no_hole_but_a_4_connected_pocket_is():
    # a ring closed only by a diagonal step still encloses its hole (foreground is 8-connected)
    mask = ring(7, (1, 1, 5, 5), (2, 2, 4, 4))
    mask[1, 1] = False  # the corner goes: still closed through (1, 2)-(2, 1) diagonally
    assert (1, 1, 5, 5) in map(tuple, component_boxes(mask).tolist())
    assert len(component_boxes(mask)) == 2
    # background touching the hole only diagonally does not leak into it (4-connected background)
    mask[2, 1] = False  # now the hole (2..4) reaches the outside through (2, 1): no hole
    assert len(component_boxes(mask)) == 1


def test_ring_shaped_cam_scores_its_hole_box_per_threshold():
    # a ring-shaped score map: high on a ring, the object in its low middle
    size = 20
    yy, xx = np.mgrid[0:size, 0:size]
    radius = np.hypot(yy - 9.5, xx - 9.5)
    scoremap = np.exp(-((radius - 6.0) ** 2) / 4.0)
    scoremap = (scoremap - scoremap.min()) / (scoremap.max() - scoremap.min())
    gts = np.array([[7, 7, 12, 12]])
    thresholds = np.arange(0, 1, 0.05)
    got = ious_over_thresholds(scoremap, gts, thresholds)
    np.testing.assert_allclose(got, wsol_best_ious(scoremap, gts, thresholds))
    outer_only = wsol_best_ious(scoremap, gts, thresholds, holes=False)  # camexp before #24
    assert (got >= outer_only).all() and (got > outer_only).any()


# ----------------------------------------------------------------------------- random maps
def random_masks(seed, n=30, size=18):
    """Rings, nested rings and noise: many holes, some nested, some touching the edge."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        mask = rng.random((size, size)) < rng.uniform(0.3, 0.8)
        x0, y0 = rng.integers(0, size // 3, 2)
        x1, y1 = rng.integers(2 * size // 3, size, 2)
        mask |= ring(size, (x0, y0, x1, y1), (x0 + 2, y0 + 2, x1 - 2, y1 - 2))
        out.append(mask)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_boxes_match_the_flood_fill_contours(seed):
    masks = random_masks(seed)
    for mask in masks:
        assert sorted(map(tuple, component_boxes(mask).tolist())) == tight(retr_tree_rects(mask))
    boxes, planes = stacked_component_boxes(np.stack(masks))
    for i, mask in enumerate(masks):
        assert sorted(map(tuple, boxes[planes == i].tolist())) == tight(retr_tree_rects(mask))


def test_best_iou_per_threshold_on_maps_with_holes_matches_the_reference():
    rng = np.random.default_rng(3)
    size = 24
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(4):
        cy, cx = rng.uniform(8, 16, 2)
        r = np.hypot(yy - cy, xx - cx)
        scoremap = np.exp(-((r - rng.uniform(4, 7)) ** 2) / rng.uniform(2, 6))
        scoremap += 0.3 * rng.random((size, size))  # noise: small holes and specks
        scoremap = (scoremap - scoremap.min()) / (scoremap.max() - scoremap.min())
        gts = np.array([[int(cx) - 3, int(cy) - 3, int(cx) + 3, int(cy) + 3]])
        thresholds = np.arange(0, 1, 0.02)
        expected = wsol_best_ious(scoremap, gts, thresholds)
        np.testing.assert_allclose(ious_over_thresholds(scoremap, gts, thresholds), expected)
