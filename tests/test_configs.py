"""Every config composes, every experiment is in force, and the leaves instantiate.

The groups and options are read from the configs/ folder, so a new YAML file is tested without
editing this file.
"""

import importlib
import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import camexp.models.backbone  # noqa: F401  (registers the small-image nets into timm)
from camexp.data.regularizers import Regularizer
from camexp.losses import CAMLoss, build_objective
from camexp.main import CONFIG_DIR
from camexp.training.model import build_loss, build_regularizer
from camexp.training.optim import build_optimizer, build_scheduler

CONFIGS = Path(CONFIG_DIR)
GROUPS = sorted(p.name for p in CONFIGS.iterdir() if p.is_dir() and p.name != "hydra")
CLI_GROUPS = [
    "backbone",
    "dataset",
    "regularizer",
    "loss",
    "optim",
    "sched",
    "task",
    "kd_pair",
    "experiment",
    "debug",
]

# Groups an experiment may leave to the user (`override /group: ???` in its defaults): the choice
# the tests make for each. A new required group needs an entry here.
REQUIRED_CHOICES = {"kd_pair": "res56_res20", "loss": "[ce,kd]", "backbone": "resnet56"}


def options(group: str, root: Path = CONFIGS) -> list[str]:
    return sorted(p.stem for p in (root / group).glob("*.yaml"))


def override(group: str, option: str) -> str:
    return f"{group}=[{option}]" if group == "loss" else f"{group}={option}"


def compose_with(overrides=(), config_dir=CONFIG_DIR) -> DictConfig:
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def group_choices(defaults) -> dict[str, str]:
    """``{group: choice}`` of the ``override /group: choice`` entries of a defaults list."""
    out = {}
    for entry in defaults:
        if isinstance(entry, dict) and len(entry) == 1:
            ((key, choice),) = entry.items()
            group = key.removeprefix("override").strip().lstrip("/").split("@")[0]
            out[group] = choice
    return out


def required_overrides(option: str, root: Path = CONFIGS) -> list[str]:
    """The command-line choices experiment ``option`` requires (its ``???`` groups)."""
    raw = OmegaConf.to_container(OmegaConf.load(root / "experiment" / f"{option}.yaml"))
    required = [g for g, c in group_choices(raw.get("defaults", [])).items() if c == "???"]
    return [f"{g}={REQUIRED_CHOICES[g]}" for g in required]


def compose_experiment(option: str, *extra: str) -> DictConfig:
    return compose_with([f"experiment={option}", *required_overrides(option), *extra])


def leaves(node, prefix=""):
    """Dotted key -> value for every leaf of a plain container (lists are leaves)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(leaves(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def is_global(path: Path) -> bool:
    return path.read_text().startswith("# @package _global_")


def lookup(node, dotted: str, default=KeyError):
    for part in dotted.split("."):
        if default is not KeyError and (not isinstance(node, dict) or part not in node):
            return default
        node = node[part]
    return node


# experiments are composed (as probes) by test_experiment_values_win
ALL_OPTIONS = [(g, o) for g in GROUPS if g != "experiment" for o in options(g)]


def test_the_groups_of_the_user_interface_exist():
    for group in CLI_GROUPS:
        assert group in GROUPS and options(group), f"configs/{group}/ is missing or empty"


@pytest.mark.parametrize("group,option", ALL_OPTIONS, ids=[f"{g}={o}" for g, o in ALL_OPTIONS])
def test_every_option_composes(group, option):
    cfg = compose_with([override(group, option)])
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    raw = OmegaConf.to_container(OmegaConf.load(CONFIGS / group / f"{option}.yaml"))
    raw.pop("defaults", None)
    node = OmegaConf.to_container(cfg)  # unresolved, like the file
    if not is_global(CONFIGS / group / f"{option}.yaml"):
        node = node[group]
    for key, value in leaves(raw).items():
        got = lookup(node, key)
        assert got == value, f"{group}={option}: {key} is {got!r}, the file says {value!r}"
    if group == "backbone":
        assert timm.is_model(cfg.backbone.name), f"no model {cfg.backbone.name} in timm"
    if group == "task":  # task=<name> runs the run() of its module in camexp.main.TASKS
        from camexp.main import TASKS

        assert callable(importlib.import_module(TASKS[cfg.task.name]).run)


def recipes() -> list[str]:
    """Experiment files that are recipes: not the one-release aliases of renamed ones."""
    from camexp.run.options import RENAMED

    return [o for o in options("experiment") if o not in RENAMED["experiment"]]


def test_renamed_experiments_are_marked_aliases():
    from camexp.run.options import RENAMED

    for old, new in RENAMED["experiment"].items():
        raw = OmegaConf.to_container(OmegaConf.load(CONFIGS / "experiment" / f"{old}.yaml"))
        assert raw == {"defaults": [new]}, f"experiment/{old}.yaml must only alias {new}"
        assert "DEPRECATED" in (CONFIGS / "experiment" / f"{old}.yaml").read_text()


@pytest.mark.parametrize("option", recipes())
def test_experiment_file_header(option):
    text = (CONFIGS / "experiment" / f"{option}.yaml").read_text()
    # Hydra reads the package header only on the very first line (docs/design.md, configs)
    assert text.splitlines()[0].strip() == "# @package _global_"
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    # what it reproduces is stated by the command, the expected number, the runtime, the references
    for word in ("Command", "Expected", "Runtime", "docs/protocols.md"):
        assert word in header, f"experiment/{option}.yaml's header should state its {word}"


def perturb(value):
    """A different value of the same type, or None where there is no safe one."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 7
    if isinstance(value, float):
        return value * 2 + 0.25
    if isinstance(value, str) and "${" not in value:
        return value + "_probe"
    return None


@pytest.fixture(scope="module")
def base_config() -> dict:
    return OmegaConf.to_container(compose_with())


@pytest.fixture(scope="module")
def config_copy(tmp_path_factory) -> Path:
    """A copy of configs/ that probe experiments can be written into."""
    copy = tmp_path_factory.mktemp("configs") / "configs"
    shutil.copytree(CONFIGS, copy)
    return copy


@pytest.mark.parametrize("option", recipes())
def test_experiment_composes_and_its_values_win(config_copy, base_config, option):
    """Every value an experiment sets is in force after composition, even where it differs
    from the primary config and the group defaults: with ``_self_`` last in config.yaml the
    primary values would silently win (docs/design.md, configs). An experiment's values may
    equal the defaults, so a copy with every value perturbed is composed (with the file's own
    defaults list) inside a copy of configs/; its group overrides must be in force too."""
    raw = OmegaConf.to_container(OmegaConf.load(CONFIGS / "experiment" / f"{option}.yaml"))
    defaults = raw.pop("defaults", [])
    probe = {k: perturb(v) for k, v in leaves(raw).items() if perturb(v) is not None}
    body = OmegaConf.create({"defaults": defaults})
    for key, value in leaves(raw).items():
        OmegaConf.update(body, key, probe.get(key, value), force_add=True)
    name = f"_probe_{option}"
    text = "# @package _global_\n" + OmegaConf.to_yaml(body)
    (config_copy / "experiment" / f"{name}.yaml").write_text(text)

    composed = compose_with(
        [f"experiment={name}", *required_overrides(option)], config_dir=config_copy
    )
    OmegaConf.to_container(composed, resolve=True)  # every interpolation resolves
    cfg = OmegaConf.to_container(composed)
    for key, value in probe.items():
        assert lookup(cfg, key) == value, f"{key} from the experiment was ignored"
    for key, value in leaves(raw).items():  # lists and interpolations, kept as they are
        if key not in probe:
            assert lookup(cfg, key) == value
    overrides = {
        group: choice
        for group, choice in group_choices(defaults).items()
        if group in GROUPS and isinstance(choice, str) and choice != "???"
    }
    for group, choice in overrides.items():
        path = CONFIGS / group / f"{choice}.yaml"
        expected = OmegaConf.to_container(OmegaConf.load(path))
        expected.pop("defaults", None)
        prefix = "" if is_global(path) else f"{group}."
        for key, value in leaves(expected).items():
            if prefix + key not in leaves(raw):
                assert lookup(cfg, prefix + key) == value, f"override /{group}: {choice} ignored"
    # the probe is observable: the experiment sets something the primary config alone does not
    assert overrides or any(lookup(base_config, k, None) != v for k, v in probe.items())


# ----------------------------------------------------------------------------- --help
def camexp_help(command):
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_help_lists_the_groups_and_both_entry_points_agree():
    script = Path(sys.executable).parent / "camexp"
    console = camexp_help([str(script), "--help"])
    module = camexp_help([sys.executable, "-m", "camexp", "--help"])
    assert console == module
    listed = {}
    for line in console.splitlines():
        name, sep, rest = line.partition(": ")
        if sep and name in GROUPS:
            listed[name] = [o.strip() for o in rest.split(",")]
    for group in CLI_GROUPS:
        assert group in listed, f"`camexp --help` does not list the {group} group"
        assert sorted(listed[group]) == options(group)
    assert "== Config ==" in console and "weight:" in console  # the composed config is shown


# ----------------------------------------------------------------------------- instantiation
@pytest.mark.parametrize("option", options("regularizer"))
def test_every_regularizer_instantiates(option):
    cfg = compose_with([f"regularizer={option}"])
    reg = build_regularizer(cfg, num_classes=4)
    assert isinstance(reg, Regularizer)
    # every knob of the class is spelled out in the YAML: no number-changing library default
    knobs = set(inspect.signature(Regularizer).parameters) - {"num_classes", "seed"}
    assert knobs <= set(cfg.regularizer) - {"_target_"}
    images, targets = reg(torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1]))
    assert images.shape == (6, 1, 8, 8)
    torch.testing.assert_close(targets.sum(1), torch.ones(6))


@pytest.mark.parametrize("terms", [["ce"], ["cam"], ["ce", "cam"]])
def test_every_loss_instantiates(terms):
    cfg = compose_with([f"loss=[{','.join(terms)}]"])
    objective = build_loss(cfg)
    assert list(objective.terms) == terms
    assert objective.needs_cam == ("cam" in terms)
    for name in terms:
        assert objective.weight_of(name) == float(cfg.loss[name].weight)


def test_every_loss_option_is_in_yaml():
    cfg = compose_with()
    knobs = set(inspect.signature(CAMLoss).parameters)
    assert knobs <= set(cfg.loss.cam) - {"_target_"}
    assert set(options("loss")) >= {"ce", "cam"}


def test_default_loss_is_ce_plus_cam():
    cfg = compose_with()
    objective = build_objective(OmegaConf.to_container(cfg.loss, resolve=True), instantiate)
    assert set(objective.terms) == {"ce", "cam"} and objective.weight_of("cam") == 1.0
    baseline = compose_with(["loss.cam.weight=0"])
    assert build_loss(baseline).weight_of("cam") == 0.0


@pytest.mark.parametrize("option", options("optim"))
def test_every_optimizer_instantiates(option):
    cfg = compose_with([f"optim={option}"])
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    optimizer = build_optimizer(cfg, model)
    assert type(optimizer).__name__ == cfg.optim._target_.rsplit(".", 1)[1]
    assert all(g["lr"] == cfg.optim.lr for g in optimizer.param_groups)
    params = sum(len(g["params"]) for g in optimizer.param_groups)
    assert params == len(list(model.parameters()))
    if not cfg.optim.decay_norm_and_bias:  # biases and norm weights get no weight decay
        decays = {g["weight_decay"] for g in optimizer.param_groups for p in g["params"]
                  if p.ndim == 1}  # fmt: skip
        assert decays == {0.0}


@pytest.mark.parametrize("option", options("sched"))
def test_every_schedule_instantiates(option):
    cfg = compose_with([f"sched={option}", "epochs=240"])  # multistep's milestones reach 210
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer, steps_per_epoch=3)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(cfg.optim.lr)  # no warm-up set
    for _ in range(3 * 240):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] < 0.01 * cfg.optim.lr


# ----------------------------------------------------------------------------- the group design
def test_regularizers_compose_from_none_and_keep_their_values():
    """Each regularizer file sets only its own keys over ``none`` (the base with every knob
    neutral); the composed values are the ones each file spelled out in full before (issue 14)."""
    neutral = {"mixup_alpha": 0.0, "cutmix_alpha": 0.0, "prob": 1.0, "switch_prob": 0.5,
               "label_smoothing": 0.0, "cutout_size": 0}  # fmt: skip
    own = {
        "none": {},
        "mixup": {"mixup_alpha": 0.2},
        "cutmix": {"cutmix_alpha": 1.0, "prob": 0.5},
        "label_smoothing": {"label_smoothing": 0.1},
        "mixup_ls": {"mixup_alpha": 0.2, "label_smoothing": 0.1},
        "cutmix_ls": {"cutmix_alpha": 1.0, "label_smoothing": 0.1},
        "mixup_cutmix": {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "label_smoothing": 0.1},
        "cutout": {"cutout_size": 16},
        "mixup_cifar": {"mixup_alpha": 1.0},
        "cutout_cifar100": {"cutout_size": 8},
    }
    assert sorted(own) == options("regularizer")
    for option, values in own.items():
        cfg = OmegaConf.to_container(compose_with([f"regularizer={option}"]).regularizer)
        assert cfg == {"_target_": "camexp.data.regularizers.Regularizer", **neutral, **values}
        raw = OmegaConf.to_container(OmegaConf.load(CONFIGS / "regularizer" / f"{option}.yaml"))
        if option != "none":
            assert raw.pop("defaults") == ["none", "_self_"]
            assert raw == values, f"regularizer/{option}.yaml repeats keys of none.yaml"


def test_no_task_option_is_global_and_task_name_behaves_like_the_group():
    for option in options("task"):
        assert not is_global(CONFIGS / "task" / f"{option}.yaml"), f"task/{option} is _global_"
    group, name = compose_with(["task=fewshot"]), compose_with(["task.name=fewshot"])
    assert group.task.name == name.task.name == "fewshot"
    # the few-shot settings exist either way; only the dataset default differs (the task refuses
    # a dataset without a few-shot split with one line)
    assert group.fewshot == name.fewshot and group.init == name.init
    assert group.dataset.name == "fashion_mnist_fewshot" and name.dataset.name == "fashion_mnist"
    assert compose_with(["task=fewshot", "dataset=cifar_fs"]).dataset.name == "cifar_fs"
    transfer = compose_with(["task=transfer"])
    assert transfer.transfer.mode == "finetune" and transfer.init.checkpoint is None


def test_the_teacher_is_a_checkpoint_not_a_group():
    assert not (CONFIGS / "teacher").exists()
    cfg = compose_with()
    assert OmegaConf.to_container(cfg.teacher) == {"ckpt": None, "name": None}


# The authors' per-pair CAT-KD settings (GzyAftermath/CAT-KD configs/cifar100/CAT_KD/*.yaml:
# CAT_loss_weight, IF_NORMALIZE False, CAM_RESOLUTION 2), with each pair's student and teacher.
KD_PAIRS = {
    "res56_res20": ("resnet20", "resnet56", 0.7),
    "res110_res32": ("resnet32", "resnet110", 1.8),
    "res32x4_res8x4": ("resnet8x4", "resnet32x4", 15.0),
    "wrn40x2_wrn16x2": ("wrn_16_2", "wrn_40_2", 12.0),
    "wrn40x2_wrn40x1": ("wrn_40_1", "wrn_40_2", 1.5),
}


@pytest.mark.parametrize("pair", sorted(KD_PAIRS))
def test_kd_recipe_takes_the_pair_and_the_loss(pair):
    student, teacher, weight = KD_PAIRS[pair]
    cfg = compose_with(["experiment=kd_cifar100", f"kd_pair={pair}", "loss=[ce,catkd]"])
    assert cfg.backbone.name == student and cfg.teacher.name == teacher
    assert cfg.task.name == "kd" and cfg.dataset.name == "cifar100"
    catkd = OmegaConf.to_container(cfg.loss.catkd, resolve=True)
    assert (catkd["weight"], catkd["normalize"], catkd["grid"]) == (weight, False, 2)
    assert set(cfg.loss) == {"ce", "catkd"}
    # the command line still wins over the pair
    cfg = compose_with(["experiment=kd_cifar100", f"kd_pair={pair}", "loss=[ce,catkd]",
                        "loss.catkd.weight=3", "backbone=resnet20"])  # fmt: skip
    assert cfg.loss.catkd.weight == 3 and cfg.backbone.name == "resnet20"
    # the pair's teacher is trained by the teacher recipe, and its CE baseline needs no teacher
    trained = compose_with(["experiment=kd_cifar100_teacher", f"backbone={teacher}"])
    assert trained.backbone.name == teacher and trained.task.name == "classify"
    assert trained.dataset.val_size == cfg.dataset.val_size == 5000
    assert trained.dataset.split_seed == cfg.dataset.split_seed
    alone = compose_with(
        ["experiment=kd_cifar100", f"kd_pair={pair}", "loss=[ce]", "task=classify"]
    )
    assert alone.task.name == "classify" and alone.backbone.name == student


def test_kd_recipe_requires_a_pair_and_a_loss():
    with pytest.raises(Exception, match="kd_pair"):
        compose_with(["experiment=kd_cifar100", "loss=[ce,kd]"])
    with pytest.raises(Exception, match="loss"):
        compose_with(["experiment=kd_cifar100", "kd_pair=res56_res20"])
    with pytest.raises(Exception, match="backbone"):
        compose_with(["experiment=kd_cifar100_teacher"])


@pytest.mark.parametrize("option", options("experiment"))
def test_every_training_recipe_holds_out_a_validation_split(option):
    """Model selection never uses test (issue 13): every recipe keeps a validation split."""
    cfg = compose_experiment(option)
    if cfg.task.name != "eval":
        assert int(cfg.dataset.val_size) > 0, f"experiment={option} selects on test"
