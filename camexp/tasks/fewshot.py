"""task=fewshot: pretrain on the base classes, then N-way K-shot episodes on the novel classes.

    camexp task=fewshot dataset=cifar_fs loss.cam.weight=0,1 -m     # CE vs CAM-loss features
    camexp task=fewshot fewshot.backbone_ckpt=RUN/checkpoints/last.pt   # stage 2 only

Stage 1 is the shared training wiring (camexp/training/wiring.py) on the dataset's base classes
(its ``train``/``test`` splits), so every loss, regularizer and backbone option applies unchanged
and its checkpoints land in this run folder; results.json stays ``running`` until stage 2 ends.
The backbone of stage 2 is built from its checkpoint (camexp/models/from_checkpoint.py): with
``fewshot.backbone_ckpt`` nothing about it is restated, and images are normalised as it was
trained. Stage 2 (Tian et al., ECCV 2020) embeds every image of the novel (and optionally the
val) classes once with the frozen backbone (global-pooled last-stage features, L2-normalised),
and ``fewshot.support_augmentations`` more times through RFS's training augmentation for the
support sets (camexp/data/support_views.py), then scores logistic regression and nearest
prototype on episodes drawn from ``fewshot.episode_seed``, identical for every backbone.
results.json gets, per split, shot and classifier,
``fewshot/<split>/<N>way_<K>shot/<classifier>/acc`` (percent, mean over episodes)
and ``.../ci95`` (1.96 * std / sqrt(episodes)); the base-class classification metrics are kept
under ``base/``.
"""

import logging
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from camexp.data.episodes import check_episode_shape, sample_episodes
from camexp.data.fewshot_splits import limit_per_class, seen_classes
from camexp.data.folder import folder_loader, folder_transform
from camexp.data.memory import InMemoryLoader
from camexp.data.sources import ArraySplit
from camexp.data.support_views import support_view_loaders
from camexp.engine import autocast
from camexp.errors import UserError
from camexp.metrics.fewshot import CLASSIFIERS, confidence_interval, episode_accuracies
from camexp.models.from_checkpoint import check_checkpoint, model_from_checkpoint, read_checkpoint
from camexp.precision import precision_name
from camexp.run import distributed
from camexp.run.progress import track
from camexp.run.record import RunRecord
from camexp.training.data import load_source
from camexp.training.model import place
from camexp.training.setup import amp_dtype, resolve_device
from camexp.training.wiring import TaskParts, train

log = logging.getLogger(__name__)

EPISODE_SPLITS = ("val", "novel")
ROLE = "backbone checkpoint"


# ----------------------------------------------------------------------------- checks
def check_config(cfg: DictConfig) -> DictConfig:
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
    if not OmegaConf.is_list(f.shots) or not len(f.shots):
        raise UserError(f"fewshot.shots={f.shots} must be a list of shot counts; e.g. "
                        "fewshot.shots=[1,5] or fewshot.shots=[5]")  # fmt: skip
    bad = [k for k in f.shots if isinstance(k, bool) or not isinstance(k, int) or k < 1]
    if bad:  # n_way, q_query, episodes, ...: camexp/run/options.py's INTEGERS
        raise UserError(f"fewshot.shots={list(f.shots)}: {bad[0]} is not a shot count >= 1")
    if "prototype" in f.classifiers and str(f.prototype.metric) not in ("euclidean", "cosine"):
        raise UserError(f"fewshot.prototype.metric={f.prototype.metric}; use euclidean or cosine")
    if "logreg" in f.classifiers:
        c = f.logreg.C
        if isinstance(c, bool) or not isinstance(c, int | float) or not c > 0:
            raise UserError(f"fewshot.logreg.C={c} must be a number > 0 (the inverse L2 strength)")
    trains = not f.get("backbone_ckpt")
    if trains and str(f.weights) == "best" and not int(cfg.dataset.get("val_size") or 0):
        raise UserError(
            "fewshot.weights=best needs a base-class val split to select on, and "
            "dataset.val_size=0 holds none out; set dataset.val_size=N or fewshot.weights=last"
        )
    return f


def episode_labels(source) -> np.ndarray:
    if isinstance(source, ArraySplit):
        return source.labels.numpy()
    return np.asarray(source.targets, dtype=np.int64)


# ----------------------------------------------------------------------------- features
def feature_loader(cfg: DictConfig, source, spec: dict, device: torch.device):
    """Evaluation-time images (no augmentation) of an episode split, in a fixed order, normalised
    as the backbone was trained (its checkpoint's ``meta.model``)."""
    d = cfg.dataset
    mean, std = tuple(spec["mean"]), tuple(spec["std"])
    batch = int(cfg.get("eval_batch_size") or cfg.batch_size)
    if isinstance(source, ArraySplit):
        return InMemoryLoader(
            source.images, source.labels, batch, train=False, mean=mean, std=std,
            device=device, channels_last=bool(cfg.channels_last),
        )  # fmt: skip
    source.transform = folder_transform(False, int(spec["image_size"]), mean, std)
    return folder_loader(source, batch, train=False, workers=int(d.workers), device=device)


def channels(source) -> int:
    return int(source.images.shape[1]) if isinstance(source, ArraySplit) else 3


@torch.no_grad()
def extract_features(model, loader, device: torch.device, amp_dtype=None):
    """Once per image: global-average-pooled last-stage features, L2-normalised, on the CPU.
    Returns (features float32 (N, C), labels int64 (N,))."""
    model.eval()
    feats, labels = [], []
    for images, y in track(loader, "few-shot embedding"):
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


def support_features(cfg: DictConfig, model, source, spec: dict, device, amp_dtype):
    """RFS's support views (``fewshot.support_augmentations``, 5 in RFS): (A, N, C) features of A
    augmented views of every image, or None when A is 0 (camexp/data/support_views.py)."""
    d, views = cfg.dataset, int(cfg.fewshot.support_augmentations)
    loaders = support_view_loaders(
        source, views, batch_size=int(cfg.get("eval_batch_size") or cfg.batch_size),
        mean=tuple(spec["mean"]), std=tuple(spec["std"]), image_size=int(spec["image_size"]),
        crop_padding=d.get("crop_padding"), hflip=bool(d.get("hflip", True)), device=device,
        workers=int(d.get("workers", 0)), seed=int(cfg.fewshot.episode_seed),
        channels_last=bool(cfg.channels_last),
    )  # fmt: skip
    if not loaders:
        return None
    return np.stack([extract_features(model, view, device, amp_dtype)[0] for view in loaders])


def check_unseen(cfg: DictConfig, state: dict, path: str, sources: dict) -> None:
    """The backbone must not have been trained on an episode split's classes (its checkpoint's
    ``meta.dataset.classes``), unless ``fewshot.allow_class_overlap=true``."""
    trained_on = state["meta"]["dataset"]["classes"]
    overlap = seen_classes(trained_on, {name: s.classes for name, s in sources.items()})
    if overlap and not cfg.fewshot.allow_class_overlap:
        name, found = next(iter(overlap.items()))
        shown = ", ".join(found[:4]) + (f", ... ({len(found)} in all)" if len(found) > 4 else "")
        raise UserError(
            f"{ROLE} {path} was trained on {len(found)} of the {name} classes ({shown}) of "
            f"{cfg.dataset.name}: its few-shot accuracy would not be few-shot; use a backbone "
            "trained on the base classes, or fewshot.allow_class_overlap=true to score it anyway"
        )
    if overlap:
        log.warning("%s was trained on %s classes; scored anyway (fewshot.allow_class_overlap)",
                    path, " and ".join(overlap))  # fmt: skip


def load_backbone(cfg: DictConfig, path: str, sources: dict, device):
    """The frozen backbone of a camexp checkpoint; its input channels must fit the episodes',
    and it must not have seen their classes (:func:`check_unseen`)."""
    state = read_checkpoint(path, ROLE)
    check_unseen(cfg, state, path, sources)
    source = next(iter(sources.values()))
    check_checkpoint(state, path, role=ROLE, expect={"in_chans": channels(source)})
    model = model_from_checkpoint(state, path, needs_cam=False, role=ROLE)
    return place(cfg, model, device), state


# ----------------------------------------------------------------------------- episodes
def evaluate_split(name: str, features, labels, f: DictConfig, support=None) -> dict:
    """Every (shot, classifier) on the same episodes per shot; one console line each."""
    metrics = {}
    n_way, q, count = int(f.n_way), int(f.q_query), int(f.episodes)
    for shot in (int(s) for s in f.shots):
        episodes = sample_episodes(labels, n_way, shot, q, count, int(f.episode_seed))
        for clf in f.classifiers:
            options = OmegaConf.to_container(f.get(clf) or {}, resolve=True)
            started = time.perf_counter()
            accs = episode_accuracies(features, episodes, str(clf), options, support)
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
    device = resolve_device(str(cfg.device))
    record.note(device=device)
    sources = {
        name: limit_per_class(load_source(cfg.dataset, name), f.get("images_per_class"))
        for name in f.splits
    }
    for name, source in sources.items():
        if len(source.classes) == 0:
            raise UserError(f"dataset {cfg.dataset.name} has no {name} classes")
        for shot in f.shots:
            check_episode_shape(episode_labels(source), int(f.n_way), int(shot),
                                int(f.q_query), list(source.classes))  # fmt: skip

    # --- stage 1: the training wiring on the base classes, unless a backbone is given
    fields = {}
    if f.backbone_ckpt:
        path = os.path.abspath(str(f.backbone_ckpt))
    else:
        stage1 = TaskParts(status="running", fields={"stage": "base-training done"})
        fields = train(cfg, record, stage1)
        if not distributed.is_main():  # rank 0 alone scores the episodes
            return fields
        path = os.path.join(record.run_dir, "checkpoints", f"{f.weights}.pt")

    # --- stage 2: features once per image, then the episodes
    amp = amp_dtype(str(cfg.amp), device)
    record.note(precision=fields.get("precision") or precision_name(amp))  # training's, if any
    metrics = {f"base/{k}": v for k, v in fields.get("metrics", {}).items()}
    model, state = load_backbone(cfg, path, sources, device)
    spec = state["meta"]["model"]
    started = time.perf_counter()
    for name, source in sources.items():
        loader = feature_loader(cfg, source, spec, device)
        feats, labels = extract_features(model, loader, device, amp)
        log.info("%s: %d images of %d classes embedded, %d-d features", name, len(labels),
                 len(source.classes), feats.shape[1])  # fmt: skip
        support = support_features(cfg, model, source, spec, device, amp)  # RFS support views
        metrics.update(evaluate_split(name, feats, labels, f, support))
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
            "support_augmentations": int(f.support_augmentations),
            "embedding_precision": precision_name(amp),
            "images_per_class": f.get("images_per_class"),
            "seconds": round(time.perf_counter() - started, 2),
        },
    )
