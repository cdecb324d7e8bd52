"""task=fewshot: pretrain on the base classes, then N-way K-shot episodes on the novel classes.

    camexp task=fewshot dataset=cifar_fs loss.cam.weight=0,1 -m     # CE vs CAM-loss features
    camexp task=fewshot fewshot.backbone_ckpt=RUN/checkpoints/last.pt   # stage 2 only

Stage 1 is ``task=classify`` itself on the dataset's base classes (its ``train``/``test`` splits),
so every loss, regularizer and backbone option applies unchanged and its checkpoints land in this
run folder. Stage 2 (Tian et al., ECCV 2020) embeds every image of the novel (and optionally the
val) classes once with the frozen backbone (global-pooled last-stage features, L2-normalised),
then scores logistic regression and nearest prototype on episodes drawn from
``fewshot.episode_seed``, identical for every backbone. results.json gets, per split, shot and
classifier, ``fewshot/<split>/<N>way_<K>shot/<classifier>/acc`` (percent, mean over episodes)
and ``.../ci95`` (1.96 * std / sqrt(episodes)); the base-class classification metrics are kept
under ``base/``.
"""

import logging
import os
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from camexp.data.episodes import (
    CLASSIFIERS,
    check_episode_shape,
    confidence_interval,
    episode_accuracies,
    sample_episodes,
)
from camexp.data.fewshot_splits import limit_per_class
from camexp.data.folder import folder_loader, folder_transform
from camexp.data.memory import InMemoryLoader
from camexp.data.sources import ArraySplit
from camexp.engine import autocast
from camexp.errors import UserError
from camexp.run.checkpoint import load_checkpoint
from camexp.run.record import RunRecord
from camexp.tasks import classify
from camexp.training import parts as build

log = logging.getLogger(__name__)

EPISODE_SPLITS = ("val", "novel")


class StageRecord:
    """Stage 1's view of the run record: classify's final write keeps the status ``running``
    (stage 2 is still to come) and remembers the fields for the final record."""

    def __init__(self, record: RunRecord):
        self.record = record
        self.run_dir = record.run_dir
        self.fields: dict = {}

    def write(self, status: str, **fields) -> dict:
        self.fields = fields
        return self.record.write("running", stage="base-training done", **fields)


# ----------------------------------------------------------------------------- checks
def check_config(cfg: DictConfig) -> DictConfig:
    if "fewshot" not in cfg:
        raise UserError("task=fewshot needs its settings: use `task=fewshot`, not task.name")
    if not cfg.dataset.get("fewshot_split"):
        raise UserError(
            f"dataset={cfg.dataset.name} has no few-shot class split; use dataset="
            "fashion_mnist_fewshot, cifar_fs, fc100, mini_imagenet or cub_fewshot"
        )
    f = cfg.fewshot
    unknown = [s for s in f.splits if s not in EPISODE_SPLITS]
    if unknown or not len(f.splits):
        raise UserError(f"fewshot.splits={list(f.splits)}; use a subset of {list(EPISODE_SPLITS)}")
    wrong = [c for c in f.classifiers if c not in CLASSIFIERS]
    if wrong or not len(f.classifiers):
        raise UserError(f"fewshot.classifiers={list(f.classifiers)}; use {list(CLASSIFIERS)}")
    if str(f.weights) not in ("last", "best"):
        raise UserError(f"fewshot.weights={f.weights!r}; use last or best")
    if not len(f.shots):
        raise UserError("fewshot.shots is empty; e.g. fewshot.shots=[1,5]")
    return f


def episode_labels(source) -> np.ndarray:
    if isinstance(source, ArraySplit):
        return source.labels.numpy()
    return np.asarray(source.targets, dtype=np.int64)


# ----------------------------------------------------------------------------- features
def feature_loader(cfg: DictConfig, source, device: torch.device):
    """Evaluation-time images (no augmentation) of an episode split, in a fixed order."""
    d = cfg.dataset
    mean, std = tuple(d.mean), tuple(d.std)
    batch = int(cfg.get("eval_batch_size") or cfg.batch_size)
    if isinstance(source, ArraySplit):
        return InMemoryLoader(
            source.images, source.labels, batch, train=False, mean=mean, std=std,
            device=device, channels_last=bool(cfg.channels_last),
        )  # fmt: skip
    source.transform = folder_transform(False, int(d.image_size), mean, std)
    return folder_loader(source, batch, train=False, workers=int(d.workers), device=device)


def input_shape(cfg: DictConfig, source) -> tuple[int, int]:
    if isinstance(source, ArraySplit):
        return int(source.images.shape[1]), int(source.images.shape[-1])
    return 3, int(cfg.dataset.image_size)


@torch.no_grad()
def extract_features(model, loader, device: torch.device, amp_dtype=None):
    """Once per image: global-average-pooled last-stage features, L2-normalised, on the CPU.
    Returns (features float32 (N, C), labels int64 (N,))."""
    model.eval()
    feats, labels = [], []
    for images, y in loader:
        with autocast(device, amp_dtype):
            maps = model(images.to(device, non_blocking=True)).features
        if maps.dim() != 4:
            raise UserError(
                f"the backbone's features have shape {tuple(maps.shape)}, not (B, C, H, W); "
                "few-shot evaluation needs a CNN with a pooled penultimate layer"
            )
        pooled = maps.float().mean(dim=(2, 3))  # (B, C)
        feats.append(F.normalize(pooled, dim=1).cpu())
        labels.append(torch.as_tensor(y).cpu())
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


def load_backbone(cfg: DictConfig, path: str, channels: int, image_size: int, device):
    """The frozen backbone from a camexp checkpoint, checked against this run's backbone."""
    state = load_checkpoint(path)
    meta = state.get("meta") or {}
    if "num_classes" not in meta or "model" not in state:
        raise UserError(f"{path} records no model or class count; is it a camexp run checkpoint?")
    expected = {
        "backbone": str(cfg.backbone.name),
        "in_chans": channels,
        "small_input_stem": bool(cfg.backbone.small_input_stem),
    }
    for key, value in expected.items():
        if key in meta and meta[key] != value:
            raise UserError(
                f"checkpoint {path} was trained with {key}={meta[key]}, this run has "
                f"{key}={value}; its features do not fit (pass the matching backbone/dataset)"
            )
    shape = SimpleNamespace(num_classes=int(meta["num_classes"]), channels=channels,
                            image_size=image_size)  # fmt: skip
    model = build.build_model(cfg, shape, needs_cam=False, device=device)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise UserError(f"checkpoint {path} does not fit backbone {meta.get('backbone')} "
                        f"({first[:160]})") from err  # fmt: skip
    return model, state


# ----------------------------------------------------------------------------- episodes
def evaluate_split(name: str, features, labels, f: DictConfig) -> dict:
    """Every (shot, classifier) on the same episodes per shot; one console line each."""
    metrics = {}
    n_way, q, count = int(f.n_way), int(f.q_query), int(f.episodes)
    for shot in (int(s) for s in f.shots):
        episodes = sample_episodes(labels, n_way, shot, q, count, int(f.episode_seed))
        for clf in f.classifiers:
            options = OmegaConf.to_container(f.get(clf) or {}, resolve=True)
            started = time.perf_counter()
            accs = episode_accuracies(features, episodes, str(clf), options)
            mean, ci = float(accs.mean()), confidence_interval(accs)
            key = f"fewshot/{name}/{n_way}way_{shot}shot/{clf}"
            metrics[f"{key}/acc"], metrics[f"{key}/ci95"] = round(mean, 4), round(ci, 4)
            log.info(
                "%s %d-way %d-shot %-9s %.2f +- %.2f  (%d episodes, %d queries each, %.1fs)",
                name, n_way, shot, clf, mean, ci, count, n_way * q, time.perf_counter() - started,
            )  # fmt: skip
    return metrics


def run(cfg: DictConfig, record: RunRecord) -> dict:
    # --- checks first: an impossible episode must not cost a training run
    f = check_config(cfg)
    build.check_common(cfg)
    device = build.resolve_device(str(cfg.device))
    sources = {
        name: limit_per_class(build.load_source(cfg.dataset, name), f.get("images_per_class"))
        for name in f.splits
    }
    for name, source in sources.items():
        if len(source.classes) == 0:
            raise UserError(f"dataset {cfg.dataset.name} has no {name} classes")
        for shot in f.shots:
            check_episode_shape(episode_labels(source), int(f.n_way), int(shot),
                                int(f.q_query), list(source.classes))  # fmt: skip

    # --- stage 1: the classify task on the base classes, unless a backbone is given
    fields = {}
    if f.backbone_ckpt:
        path = os.path.abspath(str(f.backbone_ckpt))
    else:
        stage = StageRecord(record)
        classify.run(cfg, stage)
        fields = stage.fields
        path = os.path.join(record.run_dir, "checkpoints", f"{f.weights}.pt")

    # --- stage 2: features once per image, then the episodes
    amp = build.amp_dtype(str(cfg.amp), device)
    metrics = {f"base/{k}": v for k, v in fields.get("metrics", {}).items()}
    first = next(iter(sources.values()))
    model, state = load_backbone(cfg, path, *input_shape(cfg, first), device)
    started = time.perf_counter()
    for name, source in sources.items():
        feats, labels = extract_features(model, feature_loader(cfg, source, device), device, amp)
        log.info("%s: %d images of %d classes embedded, %d-d features", name, len(labels),
                 len(source.classes), feats.shape[1])  # fmt: skip
        metrics.update(evaluate_split(name, feats, labels, f))
    return record.write(
        "completed",
        epochs_completed=fields.get("epochs_completed", 0),
        metrics=metrics,
        train_images_per_s=fields.get("train_images_per_s"),
        fewshot={
            "backbone_checkpoint": path,
            "checkpoint_epoch": state.get("epoch"),
            "n_way": int(f.n_way),
            "shots": [int(s) for s in f.shots],
            "q_query": int(f.q_query),
            "episodes": int(f.episodes),
            "episode_seed": int(f.episode_seed),
            "images_per_class": f.get("images_per_class"),
            "seconds": round(time.perf_counter() - started, 2),
        },
    )
