"""Every experiment file instantiates and trains one step, on tiny stand-in data.

Each ``experiment=X`` is composed as a user runs it (a required group gets the choice of
tests/test_configs.py's REQUIRED_CHOICES; ``kd_cifar100`` is run once per KD pair with every
distillation term at once). Its leaves are built from the composed config: the backbone (and, for
task=kd, a frozen teacher of ``teacher.name``), the objective, the regularizer, the optimizer and
the schedule, the CAM-quality metrics. Then one ``engine.train_one_epoch`` step runs on 4 random
images with the experiment's channel count. Only the data is swapped (no dataset files here), and
the image side is shrunk (16 px, or 64 px for folder datasets' 224/448 px) to keep each case
under a second or two on CPU.

The step must give a finite loss with every configured term logged and must change the weights.
"""

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from test_configs import KD_PAIRS, compose_experiment, options

from camexp.engine import train_one_epoch
from camexp.losses import build_objective
from camexp.models.backbone import build_backbone
from camexp.models.teacher import FrozenTeacher, check_teacher_terms, needs_teacher_cam
from camexp.training.model import build_regularizer
from camexp.training.optim import build_optimizer, build_scheduler

NUM_CLASSES = 10
BATCH = 4

# kd_cifar100 once per pair, with every distillation term (KD's CE weight as its recipe says)
CASES = [(o, ()) for o in options("experiment") if o != "kd_cifar100"] + [
    ("kd_cifar100", (f"kd_pair={p}", "loss=[ce,kd,at,catkd,ccm]", "loss.ce.weight=0.1"))
    for p in sorted(KD_PAIRS)
]


def stand_in_shape(cfg: DictConfig) -> tuple[int, int]:
    """(channels, side) of the stand-in images: the experiment's channel count, a small side."""
    channels = len(cfg.dataset.mean)
    # folder datasets (224/448 px) feed ImageNet stems (/32): 64 px still leaves a 2x2 CAM; the
    # small-image nets (/4, /8 with a small stem) keep 4x4 or 2x2 at 16 px
    return channels, 64 if cfg.dataset.get("image_size") else 16


def network(spec: DictConfig, channels: int, side: int, needs_cam: bool):
    extra = OmegaConf.to_container(spec.kwargs) if spec.get("kwargs") else {}
    return build_backbone(
        str(spec.name), NUM_CLASSES, channels, side, needs_cam=needs_cam,
        pretrained=False,  # the hub is unreachable in tests; the architecture is what counts
        small_input_stem=bool(spec.get("small_input_stem", False)),
        drop_rate=float(spec.get("drop_rate", 0.0)), **extra,
    )  # fmt: skip


@pytest.mark.parametrize("option,extra", CASES, ids=[" ".join((o, *e)) for o, e in CASES])
def test_experiment_trains_one_step(option, extra):
    cfg = compose_experiment(option, *extra, "device=cpu")
    torch.manual_seed(0)
    channels, side = stand_in_shape(cfg)

    objective = build_objective(OmegaConf.to_container(cfg.loss, resolve=True), instantiate)
    is_kd = str(cfg.task.name) == "kd"
    check_teacher_terms(objective, has_teacher=is_kd)
    model = network(cfg.backbone, channels, side, objective.needs_cam)
    teacher = None
    if is_kd:
        assert cfg.teacher.name, f"experiment={option} names no teacher architecture"
        spec = OmegaConf.create({"name": cfg.teacher.name})
        teacher = FrozenTeacher(network(spec, channels, side, needs_teacher_cam(objective)))
    regularizer = build_regularizer(cfg, NUM_CLASSES)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer, steps_per_epoch=1)
    if cfg.get("metrics"):
        assert instantiate(cfg.metrics) is not None

    images = torch.randn(BATCH, channels, side, side)
    labels = torch.arange(BATCH) % NUM_CLASSES
    before = [p.detach().clone() for p in model.parameters()]
    stats = train_one_epoch(
        model, objective, [(images, labels)], optimizer, scheduler, regularizer,
        torch.device("cpu"), epoch=0, teacher=teacher,
    )  # fmt: skip

    for name in cfg.loss:  # every term logged, finite (a skipped step is not counted)
        value = stats[f"train/{name}"]
        assert torch.isfinite(torch.tensor(value)), f"train/{name} is {value}"
    assert stats["train/skipped_steps"] == 0
    changed = sum(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    assert changed > 0, "one step left every weight as it was"
