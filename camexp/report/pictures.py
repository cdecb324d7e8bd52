"""CAM and CAAM pictures a reader understands without the docs.

One row per image: the image, then each map overlaid on it, with the true and predicted class
names beside the row, a title over every column (``image``, ``CAM (true class)``, ``CAAM``; with
``--cams`` prefixed by the run) and one colorbar. The overlay follows torchcam's
``overlay_mask``: the map, min-max normalised to [0, 1] and upsampled to the image, is squared,
coloured with the jet colormap and blended as ``0.7 * image + 0.3 * colour``.

The same figure goes to ``cams.png``, to TensorBoard (``cams/image_cam_caam``, >= 400 px wide)
and, for two runs, to ``camexp-report --cams``.
"""

from __future__ import annotations

import os
import textwrap

import numpy as np
import torch
import torch.nn.functional as F

from camexp.cam import class_agnostic_map, normalize, target_cam

ALPHA = 0.7  # torchcam's overlay_mask default: weight of the image under the coloured map
COLORMAP = "jet"
CELL_INCHES = 1.4  # one image cell; at DPI 100 three columns make a figure > 600 px wide
DPI = 100
PAD = 1  # pixels of white between tiles
# The overlay colours value ** 2 (torchcam), so the colorbar's scale is a power law: say so.
GAMMA_LABEL = "map value (min-max per map); colour = jet(value²), gamma 2 scale"


def heat(maps: torch.Tensor) -> torch.Tensor:
    """Map [0, 1] values (B, H, W) to RGB (B, 3, H, W) as torchcam does: jet(m ** 2)."""
    from matplotlib import colormaps

    rgba = colormaps[COLORMAP](maps.clamp(0, 1).square().cpu().numpy())  # (B, H, W, 4)
    return torch.from_numpy(rgba[..., :3]).permute(0, 3, 1, 2).float()


def overlay(pixels: torch.Tensor, maps: torch.Tensor, alpha: float = ALPHA) -> torch.Tensor:
    """Images (B, 3, H, W) in [0, 1] and maps (B, H, W) in [0, 1] -> (B, 3, H, W) blends."""
    return alpha * pixels.float().cpu() + (1 - alpha) * heat(maps)


def upsampled(maps: torch.Tensor, size) -> torch.Tensor:
    """(B, h, w) raw maps -> (B, H, W) in [0, 1]: bilinear to the image size, then min-max."""
    up = F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)
    return normalize(up[:, 0])


def run_title(run_dir: str, overrides: list) -> str:
    """A figure's provenance, first line: the run folder's name and the overrides that differ
    from the defaults (those that change results: not ``progress=``, ``hydra.*``, ...)."""
    from camexp.run.keys import neutral

    changed = [str(o) for o in overrides if not neutral(str(o).split("=", 1)[0])]
    return f"{os.path.basename(os.path.normpath(run_dir))}: {' '.join(changed) or 'defaults'}"


def weights_title(run: str, weights: str, epoch) -> str:
    """``run`` (:func:`run_title`), then which weights (last, best, EMA) of which epoch."""
    return f"{run}\n{weights} weights, epoch {epoch}"


def class_name(k: int, classes=None) -> str:
    return str(classes[k]) if classes is not None and 0 <= k < len(classes) else str(k)


def cam_figure(pixels, columns: list, row_labels: list, wrong: list | None = None,
               title: str = ""):  # fmt: skip
    """A matplotlib Figure: ``pixels`` (B, 3, H, W) in [0, 1]; ``columns`` a list of
    ``(title, maps (B, H, W) in [0, 1])``; ``row_labels`` one text per row (true and predicted
    class), in red where ``wrong``. The caller saves or renders (and closes) it.

    One axes shows the whole mosaic (one image, nearest-neighbour scaled): per-tile axes and
    tight_layout cost seconds per picture on a 2-core CPU, this costs a fraction of one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import PowerNorm

    shown = pixels.float().cpu().clamp(0, 1)
    rows, (h, w) = shown.shape[0], shown.shape[-2:]
    tiles = [shown] + [overlay(shown, maps.cpu()).clamp(0, 1) for _, maps in columns]
    cols = len(tiles)
    mosaic = torch.ones(rows * (h + PAD) - PAD, cols * (w + PAD) - PAD, 3)  # white gaps
    for c, tile in enumerate(tiles):
        for r in range(rows):
            y, x = r * (h + PAD), c * (w + PAD)
            mosaic[y : y + h, x : x + w] = tile[r].permute(1, 2, 0)
    # inches: a tile is CELL_INCHES wide; margins for row labels (left), titles (top), colorbar
    left, right, bottom = 1.3, 1.1, 0.1
    width = left + cols * CELL_INCHES + right
    # about 13 characters of a 10-point title per inch; a long override list wraps
    title = "\n".join(textwrap.fill(line, int(width * 13)) for line in title.splitlines())
    top = 0.35 + 0.2 * len(title.splitlines())
    cell_h = CELL_INCHES * h / w
    height = top + rows * cell_h + bottom
    fig = plt.figure(figsize=(width, height), dpi=DPI)
    ax = fig.add_axes((left / width, bottom / height, cols * CELL_INCHES / width,
                       rows * cell_h / height))  # fmt: skip
    image = ax.imshow(mosaic.numpy(), interpolation="nearest", aspect="auto")
    image.camexp_rows, image.camexp_cols = rows, cols  # for tile()
    ax.set_axis_off()
    for c, name in enumerate(["image"] + [t for t, _ in columns]):
        ax.text(c * (w + PAD) + w / 2, -1, name, ha="center", va="bottom", fontsize=9)
    for r, text in enumerate(row_labels):
        red = wrong is not None and wrong[r]
        ax.text(-2, r * (h + PAD) + h / 2, text, ha="right", va="center", fontsize=8,
                color="red" if red else "black")  # fmt: skip
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.05 / height, va="top")
    bar = fig.add_axes((1 - 0.75 / width, 0.15, 0.15 / width, 0.7))
    mappable = ScalarMappable(norm=PowerNorm(gamma=2, vmin=0, vmax=1), cmap=COLORMAP)
    fig.colorbar(mappable, cax=bar).set_label(GAMMA_LABEL, fontsize=8)
    return fig


def tile(fig, row: int, col: int) -> np.ndarray:
    """The (H, W, 3) tile at ``row``, ``col`` of a cam_figure (for checks and notebooks)."""
    image = fig.axes[0].get_images()[0]
    mosaic = np.asarray(image.get_array())
    h = (mosaic.shape[0] + PAD) // image.camexp_rows - PAD
    w = (mosaic.shape[1] + PAD) // image.camexp_cols - PAD
    y, x = row * (h + PAD), col * (w + PAD)
    return mosaic[y : y + h, x : x + w]


def figure_array(fig) -> torch.Tensor:
    """Render a figure to a (3, H, W) float tensor in [0, 1] (TensorBoard's image layout)."""
    import matplotlib.pyplot as plt

    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())  # (H, W, 4) uint8
    plt.close(fig)
    return torch.from_numpy(rgba[..., :3].copy()).permute(2, 0, 1).float() / 255.0


@torch.no_grad()
def model_columns(model, images: torch.Tensor, labels: torch.Tensor, prefix: str = ""):
    """One model's ``[(title, maps)]`` (target CAM when the head is exact, CAAM) and its
    predictions, for normalised ``images`` (B, C, H, W)."""
    was_training = model.training
    model.eval()
    out = model(images)
    model.train(was_training)
    size = images.shape[-2:]
    features = out.features.float()
    columns = []
    if out.fc_weight is not None:
        cam = target_cam(features, out.fc_weight.float(), labels)  # (B, h, w)
        columns.append((f"{prefix}CAM (true class)", upsampled(cam, size).cpu()))
    columns.append((f"{prefix}CAAM", upsampled(class_agnostic_map(features), size).cpu()))
    return columns, out.logits.argmax(1).cpu()


def denormalised(images: torch.Tensor, mean, std) -> torch.Tensor:
    """Normalised (B, C, H, W) -> RGB (B, 3, H, W) in [0, 1]; grey images repeated to RGB."""
    shape = (1, -1, 1, 1)
    pixels = images.float().cpu() * torch.tensor(std).view(shape) + torch.tensor(mean).view(shape)
    pixels = pixels.clamp(0, 1)
    return pixels.expand(-1, 3, -1, -1) if pixels.shape[1] == 1 else pixels


def cam_grid(model, images: torch.Tensor, labels: torch.Tensor, mean, std, classes=None,
             title: str = ""):  # fmt: skip
    """The training run's picture as a (3, H', W') tensor: image | CAM | CAAM per row, under
    ``title`` (its provenance: :func:`run_title` and :func:`weights_title`)."""
    columns, preds = model_columns(model, images, labels)
    true, preds = labels.cpu().tolist(), preds.tolist()
    texts = [f"true: {class_name(t, classes)}\npred: {class_name(p, classes)}"
             for t, p in zip(true, preds, strict=True)]  # fmt: skip
    wrong = [t != p for t, p in zip(true, preds, strict=True)]
    return figure_array(cam_figure(denormalised(images, mean, std), columns, texts, wrong, title))


def save_png(grid: torch.Tensor, path: str, scale: int = 1) -> None:
    """Write a (3, H, W) picture atomically (a kill never leaves a half-written PNG)."""
    from torchvision.utils import save_image

    from camexp.run.tracking import atomic_path

    if scale > 1:
        grid = F.interpolate(grid[None], scale_factor=scale, mode="nearest")[0]
    with atomic_path(path) as tmp:
        save_image(grid, tmp, format="png")


def save_figure(fig, path: str) -> None:
    """Write a figure to a PNG atomically and close it."""
    import matplotlib.pyplot as plt

    from camexp.run.tracking import atomic_path

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


class RunPictures:
    """A training run's CAM picture: the fixed val images (``data.picture_images``) as image | CAM |
    CAAM, titled with the run's provenance. The trainer calls it after every epoch (TensorBoard)
    and once at the end (cams.png); it is built by the task wiring, so the loop needs no report/."""

    def __init__(self, data, run_dir: str, overrides: list):
        self.data, self.title = data, run_title(run_dir, overrides)

    def __call__(self, model, epoch: int, weights: str = "last") -> torch.Tensor | None:
        d = self.data
        if len(d.picture_labels) == 0:
            return None
        return cam_grid(model, d.picture_images, d.picture_labels, d.mean, d.std, d.classes,
                        title=weights_title(self.title, weights, epoch))  # fmt: skip

    save = staticmethod(save_png)
