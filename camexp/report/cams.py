"""Two (or more) runs' maps for the same test images side by side: the ``--cams`` view of
``camexp-report``.

``compare_cams([RUN_A, RUN_B], "cams.png")`` loads each run's ``checkpoints/last.pt`` (plain data,
``weights_only``), rebuilds its model through the checkpoint contract
(camexp/models/from_checkpoint.py), reads the first ``images`` test images of the dataset the
checkpoints name (``dataset=<meta.dataset.name>`` composed from the project's own configs/:
nothing read from a run folder is instantiated), and writes one PNG row per image:

    image (ground-truth boxes in green, when the dataset has them) | A: CAM | A: CAAM | B: CAM | ...

Maps are those of camexp.report.pictures (target-class CAM and CAAM, min-max normalised, bilinear
upsampling, overlaid in torchcam's jet style), columns titled by run letter, each letter named in
the title by its run folder, the overrides that differ from the defaults, the weights (last or
best) and their epoch. All runs must have been trained on
the same dataset; each run sees the images normalised as it was trained.
"""

from __future__ import annotations

import logging
import os

import torch
from omegaconf import OmegaConf

from camexp.errors import UserError
from camexp.models.from_checkpoint import check_checkpoint, model_from_checkpoint, read_checkpoint
from camexp.report.pictures import (
    cam_figure,
    class_name,
    model_columns,
    run_title,
    save_figure,
    weights_title,
)
from camexp.report.runs import SkippedRun, load_run

log = logging.getLogger(__name__)

GREEN = (0.0, 1.0, 0.0)


def run_checkpoint(run_dir: str) -> tuple[dict, str]:
    """A run folder's last (else best) checkpoint, with the contract's meta required."""
    for name in ("last.pt", "best.pt"):
        path = os.path.join(run_dir, "checkpoints", name)
        if os.path.isfile(path):
            return read_checkpoint(path, f"{run_dir}'s checkpoint"), path
    raise UserError(f"{run_dir} has no checkpoints/last.pt or best.pt; pass a training run folder")


def provenance(run_dir: str, state: dict, path: str) -> str:
    """One run's title line: folder, overrides that differ from the defaults, weights, epoch."""
    try:
        overrides = [f"{k}={v}" for k, v in load_run(run_dir).overrides.items()]
    except SkippedRun:
        overrides = []
    weights = os.path.splitext(os.path.basename(path))[0]  # last | best
    return weights_title(run_title(run_dir, overrides), weights, state.get("epoch")).replace(
        "\n", "; "
    )


def plain(value) -> bool:
    """A value that is data: numbers, booleans, None, strings without interpolations, lists."""
    if isinstance(value, list):
        return all(plain(v) for v in value)
    if isinstance(value, str):
        return "${" not in value
    return value is None or isinstance(value, bool | int | float)


def carried_values(composed, saved: dict, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted key, value) of the saved dataset options that the project's own config also has
    (root, canvas, ...): data, never a ``_target_`` or any other ``_``-key, and never
    ``download`` (a checkpoint does not decide that camexp reaches the network)."""
    out = []
    for key, value in saved.items():
        if str(key).startswith("_") or key == "download" or key not in composed:
            continue
        if isinstance(value, dict):
            if OmegaConf.is_dict(composed[key]):
                out += carried_values(composed[key], value, f"{prefix}{key}.")
        elif plain(value):
            out.append((f"{prefix}{key}", value))
    return out


def test_images(name: str, saved: dict, count: int):
    """The first ``count`` test images (uint8), labels, boxes (or None) and class names of
    ``dataset=<name>``, composed from the project's configs/ (never from the run's files); the
    run's own plain dataset options (its root, canvas, ...) are carried over as values."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from camexp.main import CONFIG_DIR
    from camexp.run.recompose import GROUP_NAME

    if not (isinstance(name, str) and GROUP_NAME.match(name) and ".." not in name
            and os.path.isfile(os.path.join(CONFIG_DIR, "dataset", f"{name}.yaml"))):  # fmt: skip
        raise UserError(  # a name from a checkpoint is data: never a path out of configs/
            f"--cams: the checkpoints name dataset {str(name)[:80]!r}, which is not one of "
            "this camexp's datasets (configs/dataset/*.yaml)"
        )
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        try:
            cfg = compose("config", overrides=[f"dataset={name}"])
        except Exception as err:  # hydra's MissingConfigException and kin: one line
            raise UserError(f"--cams: this camexp has no dataset={name} ({err})") from err
    for key, value in carried_values(cfg.dataset, saved):
        OmegaConf.update(cfg.dataset, key, value, merge=False)
    split = instantiate(cfg.dataset.source, split="test")
    if not hasattr(split, "images"):
        raise UserError(f"--cams reads in-memory datasets; {name} is not one")
    boxes = getattr(split, "boxes", None) or None
    images, labels = split.images[:count], split.labels[:count]
    return images, labels, boxes[:count] if boxes else None, list(split.classes)


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


def compare_cams(run_dirs: list[str], out_png: str, images: int = 8):
    """Write the side-by-side figure to ``out_png`` (runs A, B, ... named in its title) and
    return it (a closed matplotlib Figure: its texts and images stay readable)."""
    if len(run_dirs) < 1:
        raise UserError("--cams needs at least one run folder (two to compare)")
    loaded = [run_checkpoint(d) for d in run_dirs]
    names = {state["meta"]["dataset"]["name"] for state, _ in loaded}
    if len(names) > 1:
        raise UserError(f"--cams compares runs on one dataset; these were trained on {names}")
    dataset = names.pop()
    saved = (loaded[0][0].get("config") or {}).get("dataset") or {}
    pixels, labels, boxes, classes = test_images(dataset, saved, images)
    if len(labels) == 0:
        raise UserError(f"the test split of {dataset} is empty")
    x = pixels.float() / 255.0  # (B, C, H, W)
    shown = x.expand(-1, 3, -1, -1).clone() if x.shape[1] == 1 else x.clone()
    if boxes is not None:
        for tile, image_boxes in zip(shown, boxes, strict=True):
            for box in image_boxes:
                draw_box(tile, box)
    columns, preds, letters = [], [], "ABCDEFGH"
    for run_dir, (state, path) in zip(run_dirs, loaded, strict=True):
        role = f"{run_dir}'s checkpoint"
        check_checkpoint(state, path, role=role, expect={
            "in_chans": x.shape[1], "classes": classes, "image_size": x.shape[-1]})  # fmt: skip
        model = model_from_checkpoint(state, path, needs_cam=True, role=role)
        spec, shape = state["meta"]["model"], (1, -1, 1, 1)
        mean = torch.tensor(spec["mean"]).view(shape)  # normalised as in training
        std = torch.tensor(spec["std"]).view(shape)
        maps, predicted = model_columns(model, (x - mean) / std, labels, f"{letters[len(preds)]}: ")
        columns, preds = columns + maps, preds + [predicted.tolist()]
    texts = [f"true: {class_name(int(y), classes)}\n" + "\n".join(
        f"{letters[i]}: {class_name(p[r], classes)}" for i, p in enumerate(preds))
        for r, y in enumerate(labels)]  # fmt: skip
    wrong = [any(p[r] != int(y) for p in preds) for r, y in enumerate(labels)]
    title = "\n".join(
        f"{letters[i]} = {provenance(d, state, path)}"
        for i, (d, (state, path)) in enumerate(zip(run_dirs, loaded, strict=True))
    )
    fig = cam_figure(shown, columns, texts, wrong, title=title)
    save_figure(fig, out_png)
    return fig
