"""Two (or more) runs' maps for the same test images side by side: the ``--cams`` view of
``camexp-report``.

``compare_cams([RUN_A, RUN_B], "cams.png")`` loads each run's ``checkpoints/last.pt`` (plain data,
``weights_only``), rebuilds its model from the checkpoint's recorded architecture, reads the first
``images`` test images of the first run's dataset, and writes one PNG row per image:

    image (ground-truth boxes in green, when the dataset has them) | A: CAM | A: CAAM | B: CAM | ...

Maps are those of camexp.report.pictures (target-class CAM and CAAM, min-max normalised, bilinear
upsampling, blue -> red). All runs must have been trained on the same dataset.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F

from camexp.cam import class_agnostic_map, normalize, target_cam
from camexp.errors import UserError
from camexp.models.backbone import build_backbone
from camexp.report.pictures import heat, save_png
from camexp.run.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

GREEN = (0.0, 1.0, 0.0)


def run_checkpoint(run_dir: str) -> dict:
    for name in ("last.pt", "best.pt"):
        path = os.path.join(run_dir, "checkpoints", name)
        if os.path.isfile(path):
            return load_checkpoint(path)
    raise UserError(f"{run_dir} has no checkpoints/last.pt or best.pt; pass a training run folder")


def load_model(state: dict, image_size: int) -> torch.nn.Module:
    meta, backbone = state.get("meta", {}), state["config"].get("backbone", {})
    model = build_backbone(
        meta["backbone"],
        meta["num_classes"],
        meta["in_chans"],
        image_size,
        needs_cam=True,
        small_input_stem=bool(meta.get("small_input_stem", False)),
        drop_rate=float(backbone.get("drop_rate", 0.0)),
        **(backbone.get("kwargs") or {}),
    )
    model.load_state_dict(state["model"])
    return model.eval()


def test_images(dataset: dict, count: int):
    """The first ``count`` test images (uint8), labels and boxes (or None) of a dataset config."""
    from hydra.utils import instantiate

    split = instantiate(dataset["source"], split="test")
    if not hasattr(split, "images"):
        raise UserError(f"compare_cams reads in-memory datasets; {dataset.get('name')} is not one")
    boxes = getattr(split, "boxes", None) or None
    return split.images[:count], split.labels[:count], boxes[:count] if boxes else None


def draw_box(tile: torch.Tensor, box, color=GREEN) -> None:
    """Outline an inclusive (x0, y0, x1, y1) box on an RGB tile (3, H, W), in place."""
    h, w = tile.shape[-2:]
    x0, y0, x1, y1 = (int(v) for v in box)
    x0, x1 = max(0, min(x0, w - 1)), max(0, min(x1, w - 1))
    y0, y1 = max(0, min(y0, h - 1)), max(0, min(y1, h - 1))
    c = torch.tensor(color, dtype=tile.dtype)[:, None]
    tile[:, y0, x0 : x1 + 1] = c
    tile[:, y1, x0 : x1 + 1] = c
    tile[:, y0 : y1 + 1, x0] = c
    tile[:, y0 : y1 + 1, x1] = c


@torch.no_grad()
def run_maps(model, inputs: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    """Target CAM and CAAM tiles (B, 3, H, W) of one model."""
    out = model(inputs)
    features = out.features.float()
    size = inputs.shape[-2:]
    tiles = []
    for m in (target_cam(features, out.fc_weight.float(), labels), class_agnostic_map(features)):
        up = F.interpolate(m[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        tiles.append(heat(normalize(up)))
    return tiles


def compare_cams(run_dirs: list[str], out_png: str, images: int = 8) -> torch.Tensor:
    """Write the side-by-side grid to ``out_png`` and return it (3, H', W')."""
    from torchvision.utils import make_grid

    if len(run_dirs) < 1:
        raise UserError("--cams needs at least one run folder (two to compare)")
    states = [run_checkpoint(d) for d in run_dirs]
    datasets = [s["config"]["dataset"] for s in states]
    names = {d.get("name") for d in datasets}
    if len(names) > 1:
        raise UserError(f"--cams compares runs on one dataset; these were trained on {names}")
    pixels, labels, boxes = test_images(datasets[0], images)
    if len(labels) == 0:
        raise UserError(f"the test split of {datasets[0].get('name')} is empty")
    x = pixels.float() / 255.0  # (B, C, H, W)
    shown = x.expand(-1, 3, -1, -1).clone() if x.shape[1] == 1 else x.clone()
    if boxes is not None:
        for tile, image_boxes in zip(shown, boxes, strict=True):
            for box in image_boxes:
                draw_box(tile, box)
    columns = [shown]
    for run_dir, state, dataset in zip(run_dirs, states, datasets, strict=True):
        shape = (1, -1, 1, 1)
        mean = torch.tensor(dataset["mean"]).view(shape)
        std = torch.tensor(dataset["std"]).view(shape)
        model = load_model(state, x.shape[-1])
        if model.num_classes <= int(labels.max()):
            raise UserError(f"{run_dir}: its model has fewer classes than the dataset's labels")
        columns += run_maps(model, (x - mean) / std, labels)
        log.info("column pair %d: %s", len(columns) // 2, run_dir)
    rows = torch.stack(columns, dim=1).flatten(0, 1)  # (B * columns, 3, H, W)
    grid = make_grid(rows, nrow=len(columns), padding=1, pad_value=1.0)
    folder = os.path.dirname(os.path.abspath(out_png))
    os.makedirs(folder, exist_ok=True)
    save_png(grid, out_png)
    return grid
