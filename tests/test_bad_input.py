"""Wrong input stops with a clear message, a non-zero exit and no traceback (docs/design.md §7.12).

Every case is a command line. Most run in this process through ``camexp.main.main`` (what the
``camexp`` console script calls) with ``sys.argv`` set, which costs a fraction of a second
instead of the ~4 s of importing torch and timm in a fresh interpreter; the cases in
``SUBPROCESS`` also run as a real ``python -m camexp`` to pin the process-level behaviour.
"""

import json
import subprocess
import sys
import textwrap
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import pytest
import torch
from conftest import run_camexp, write_cifar, write_fashion_mnist

from camexp.data.regularizers import Regularizer
from camexp.engine import train_one_epoch
from camexp.errors import Diverged
from camexp.losses import CrossEntropy, Objective
from camexp.main import main
from camexp.models.backbone import Output

COMMON = ["debug=smoke", "dataset.val_size=16", "metrics=none"]
EXIT_USER, EXIT_DIVERGED = 2, 3
SUBPROCESS = {"unknown_backbone", "unknown_dataset_option", "loss_becomes_nan", "typo_key"}


@dataclass
class Case:
    overrides: list[str]  # '{fmnist}', '{cifar100}', '{root}', '{ckpt}' are filled in
    phrases: list[str]  # each must appear on stderr
    code: int = EXIT_USER
    hydra: bool = False  # Hydra's own errors stop before the run folder is written


CASES = {
    "unknown_backbone": Case(
        ["backbone.name=resnet5"], ["unknown backbone 'resnet5'", "did you mean", "resnet50"]
    ),
    "unknown_dataset_option": Case(
        ["dataset=nope"], ["dataset=nope is not an option", "fashion_mnist"], hydra=True
    ),
    "misspelt_dataset_option": Case(
        ["dataset=fashion_mnst"], ["did you mean fashion_mnist?"], hydra=True
    ),
    "misspelt_loss_option": Case(
        ["loss=[ce,camm]"], ["loss=camm", "did you mean cam?"], hydra=True
    ),
    "transposed_loss_option": Case(["loss=[ce,cma]"], ["did you mean cam?"], hydra=True),
    "argparse_style_flag": Case(["--epochs", "3"], ["write epochs=3"], hydra=True),
    "lr_not_a_number": Case(["optim.lr=abc"], ["optim.lr=abc must be a number"]),
    "nested_int_not_a_number": Case(["ema.every=often"], ["ema.every=often must be a number"]),
    # Hydra reads `no` as the text 'no', which Python takes as true: a guard would be off
    "eval_guard_as_a_word": Case(
        ["task=eval", "ckpt={ckpt}", "task.allow_other_dataset=no"],
        ["task.allow_other_dataset=no must be true or false"],
    ),
    "fewshot_guard_as_a_word": Case(
        ["task=fewshot", "fewshot.allow_class_overlap=off"],
        ["fewshot.allow_class_overlap=off must be true or false"],
    ),
    "flag_as_a_word": Case(["deterministic=yes"], ["deterministic=yes must be true or false"]),
    "hflip_word_misspelt": Case(
        ["dataset.hflip=alternating"], ["must be true or false or alternate"]
    ),
    "fewshot_shots_not_a_list": Case(
        ["task=fewshot", "fewshot.shots=5"], ["fewshot.shots=5 must be a list", "shots=[5]"]
    ),
    "fewshot_episodes_zero": Case(
        ["task=fewshot", "fewshot.episodes=0"], ["fewshot.episodes=0 must be >= 1"]
    ),
    "fewshot_shot_not_a_count": Case(
        ["task=fewshot", "fewshot.shots=[1,0]"], ["0 is not a shot count >= 1"]
    ),
    "fewshot_prototype_metric": Case(
        ["task=fewshot", "fewshot.prototype.metric=manhattan"], ["use euclidean or cosine"]
    ),
    "fewshot_logreg_c": Case(["task=fewshot", "fewshot.logreg.C=-1"], ["must be a number > 0"]),
    "fewshot_best_without_val": Case(
        ["task=fewshot", "fewshot.weights=best", "dataset.val_size=0"],
        ["fewshot.weights=best needs a base-class val split"],
    ),
    "unknown_regularizer_key": Case(
        ["regularizer.bogus=1"],
        ["unknown key regularizer.bogus", "+regularizer.bogus="],
        hydra=True,
    ),
    "typo_key": Case(
        ["loss.cam.wieght=1"],
        ["unknown key loss.cam.wieght; did you mean loss.cam.weight?"],
        hydra=True,
    ),
    "unparsable_override": Case(["epochs=[1"], ["epochs=[1"], hydra=True),
    "unknown_top_level_key": Case(
        ["+epoch=3"], ["unknown top-level key 'epoch'", "did you mean epochs?"]
    ),
    "epochs_not_a_number": Case(["epochs=abc"], ["epochs=abc must be an integer"]),
    "epochs_not_an_integer": Case(["epochs=1.5"], ["epochs=1.5 must be an integer"]),
    "negative_checkpoint_every": Case(
        ["checkpoint_every=-1"], ["checkpoint_every=-1 must be >= 0"]
    ),
    "zero_log_every": Case(["log_every=0", "progress=true"], ["log_every=0 must be >= 1"]),
    "empty_loss": Case(["loss=[]"], ["loss=[] leaves no loss term", "loss=[ce]"]),
    "checkpoint_without_model": Case(
        ["task=eval", "ckpt={root}/nomodel.pt"], ["nomodel.pt holds no model weights"]
    ),
    "missing_dataset_dir": Case(
        ["dataset.root=/nonexistent/fmnist"], ["Fashion-MNIST not found", "dataset.root"]
    ),
    "wrong_dataset_layout": Case(
        ["dataset.root={root}/wrong_layout"], ["Fashion-MNIST not found", "wrong_layout"]
    ),
    "cifar_layout_missing": Case(
        ["dataset=cifar10", "dataset.root={fmnist}"], ["cifar-10-batches-py", "dataset.root"]
    ),
    "negative_cam_weight": Case(["loss.cam.weight=-1"], ["loss.cam.weight must be >= 0"]),
    "bad_cam_option": Case(["loss.cam.norm=bogus"], ["loss.cam.norm='bogus'", "minmax"]),
    "zero_batch_size": Case(["batch_size=0"], ["batch_size=0 must be >= 1"]),
    "head_without_exact_cam": Case(
        ["backbone=resnet20", "backbone.name=mobilenetv3_small_050"],
        ["has no exact CAM", "loss=[ce]"],
    ),
    "eval_without_ckpt": Case(["task=eval"], ["task=eval needs a checkpoint", "ckpt="]),
    "eval_missing_ckpt": Case(["task=eval", "ckpt={root}/nope.pt"], ["nope.pt does not exist"]),
    "eval_other_dataset": Case(
        ["task=eval", "ckpt={ckpt}", "dataset=digits"],
        ["trained on fashion_mnist", "classes=", "task.allow_other_dataset=true"],
    ),
    "eval_other_class_count": Case(
        ["task=eval", "ckpt={ckpt}", "dataset=cifar100", "dataset.root={cifar100}"],
        ["num_classes=10", "num_classes=100"],
    ),
    "not_a_camexp_checkpoint": Case(
        ["task=eval", "ckpt={root}/plain.pt"], ["plain.pt is not a camexp checkpoint"]
    ),
    "checkpoint_needing_code": Case(
        ["task=eval", "ckpt={root}/code.pt"], ["refusing", "code.pt", "unpickling"]
    ),
    "loss_becomes_nan": Case(
        ["optim.lr=1e30", "batch_size=8"], ["diverged", "training loss became nan"], EXIT_DIVERGED
    ),
    "weights_overflow_in_the_last_step": Case(
        ["optim.lr=1e30"], ["diverged", "validation loss is nan"], EXIT_DIVERGED
    ),
}

# Unpickling an instance of this class imports the module and runs __setstate__, which leaves a
# marker file: a loader that executes code would be caught red-handed.
HELPER = """
import os


class Payload:
    def __setstate__(self, state):
        open(os.path.join(os.path.dirname(__file__), "CODE_RAN"), "w").close()
        self.__dict__.update(state)
"""


def camexp_subprocess(args: list[str], cwd: Path) -> tuple[int, str]:
    done = run_camexp(*args, cwd=cwd)
    return done.returncode, done.stderr


def camexp_in_process(args: list[str], cwd: Path, monkeypatch) -> tuple[int, str]:
    """``camexp ARGS`` through the console script's function; returns (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["camexp", *args])
    monkeypatch.chdir(cwd)
    monkeypatch.syspath_prepend(str(cwd))  # as `python -m` would: a pickle could import from cwd
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    err, code = StringIO(), 0
    with redirect_stdout(StringIO()), redirect_stderr(err):
        try:
            main()
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, err.getvalue()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_inputs(root: Path) -> dict:
    """The files the cases point at; returns the values of the override placeholders."""
    fmnist = write_fashion_mnist(root / "fmnist")
    cifar100 = write_cifar(root / "cifar100", "cifar100", n_train=200, n_test=100)
    wrong = root / "wrong_layout"  # an image-folder layout where IDX files belong
    (wrong / "train" / "shirt").mkdir(parents=True)
    (wrong / "train" / "shirt" / "0.png").write_bytes(b"\x89PNG not really")
    (wrong / "train-images.txt").write_text("not an IDX file")
    torch.save({"model": {"w": torch.zeros(2)}, "epoch": 1}, root / "plain.pt")
    torch.save({"format": "camexp-checkpoint-v1", "epoch": 1}, root / "nomodel.pt")
    (root / "ckpt_helper.py").write_text(textwrap.dedent(HELPER))
    script = (
        "import torch; from ckpt_helper import Payload; p = Payload(); p.x = 1; "
        "torch.save({'format': 'camexp-checkpoint-v1', 'model': p}, 'code.pt')"
    )
    subprocess.run([sys.executable, "-c", script], cwd=root, check=True, timeout=120)
    (root / "CODE_RAN").unlink(missing_ok=True)
    return {"root": str(root), "fmnist": fmnist, "cifar100": cifar100}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("bad_input")
    values = write_inputs(root)
    # a resnet20 checkpoint of 10 classes and 1 channel for the eval cases
    with pytest.MonkeyPatch.context() as monkeypatch:
        run_dir = root / "runs" / "trained"
        code, stderr = camexp_in_process(
            [*COMMON, f"hydra.run.dir={run_dir}", f"dataset.root={values['fmnist']}"],
            root,
            monkeypatch,
        )
    assert code == 0, stderr
    values["ckpt"] = str(run_dir / "checkpoints" / "best.pt")
    return values


def run_case(name: str, values: dict, monkeypatch, subprocess_too: bool = False):
    """Run case ``name``; returns (exit code, stderr, run dir)."""
    root = Path(values["root"])
    filled = [o.format(**values) for o in CASES[name].overrides]
    outcomes = []
    for mode in ("in_process", "subprocess") if subprocess_too else ("in_process",):
        run_dir = root / "runs" / f"{name}-{mode}"
        args = [*COMMON, f"hydra.run.dir={run_dir}", f"dataset.root={values['fmnist']}", *filled]
        if mode == "subprocess":
            outcomes.append((*camexp_subprocess(args, root), run_dir))
        else:
            outcomes.append((*camexp_in_process(args, root, monkeypatch), run_dir))
    return outcomes


def check_outcome(case: Case, code: int, stderr: str, run_dir: Path, root: str) -> None:
    assert code == case.code, f"exit {code}; stderr:\n{stderr[-3000:]}"
    assert "Traceback" not in stderr, stderr[-3000:]
    for phrase in case.phrases:
        assert phrase in stderr, f"{phrase!r} not in stderr:\n{stderr}"
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert lines[0].startswith("camexp: ")
    results = run_dir / "results.json"
    # a user error leaves no run folder (issue 27 #7); a diverged run records its status
    assert run_dir.exists() == (case.code == EXIT_DIVERGED)
    if results.exists():
        record = json.loads(results.read_text())
        assert record["status"] == ("diverged" if case.code == EXIT_DIVERGED else "failed")
        assert "error" in record
    if case.code == EXIT_DIVERGED:  # one epoch that never finished: nothing may be saved
        assert record["epochs_completed"] == 0
        checkpoints = run_dir / "checkpoints"
        assert not (checkpoints / "best.pt").exists() and not (checkpoints / "last.pt").exists()
    assert not Path(root, "CODE_RAN").exists(), "loading a checkpoint executed code"


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_stops_cleanly(inputs, monkeypatch, name):
    for code, stderr, run_dir in run_case(name, inputs, monkeypatch, name in SUBPROCESS):
        check_outcome(CASES[name], code, stderr, run_dir, inputs["root"])


def test_nan_inputs_diverge_before_the_optimizer_step():
    """dataset.std=0 makes inf/NaN inputs: the first loss is NaN and no weight may change."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(36, 3)
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}

    class Head(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return Output(self.net(x), x, None)

    images = torch.full((4, 1, 5, 5), float("nan"))
    loader = [(images, torch.tensor([0, 1, 2, 0]))]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    with pytest.raises(Diverged, match="nan"):
        train_one_epoch(
            Head(model),
            Objective({"ce": CrossEntropy()}),
            loader,
            optimizer,
            scheduler,
            Regularizer(3),
            torch.device("cpu"),
            epoch=0,
        )
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} changed"


@pytest.mark.parametrize(
    "override, phrase",
    [("+optim.bogus=1", "unexpected keyword argument 'bogus'"), ("optim.momentum=-1", "momentum")],
)
def test_an_optimizer_option_torch_rejects_is_one_line(tiny_fmnist, tmp_path, override, phrase):
    done = run_camexp(
        "debug=smoke", f"dataset.root={tiny_fmnist}", "dataset.val_size=16", "metrics=none",
        override, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert phrase in done.stderr and "optim:" in done.stderr
    assert not (tmp_path / "run").exists()  # a user error leaves no run folder


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_resume_with_a_truncated_hydra_config_is_one_line(inputs, monkeypatch, cut):
    """Cut mid-file the YAML is either unreadable or incomplete: both are one line, exit 2."""
    import shutil

    trained = Path(inputs["ckpt"]).parent.parent
    run = Path(inputs["root"]) / "runs" / f"truncated-{cut}"
    shutil.copytree(trained, run)
    config = run / ".hydra" / "config.yaml"
    text = config.read_text()
    config.write_text(text[: int(len(text) * cut)])
    before = (run / "results.json").read_text()
    code, stderr = camexp_in_process([f"resume={run}"], Path(inputs["root"]), monkeypatch)
    assert code == EXIT_USER, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "config.yaml" in lines[0], stderr
    assert (run / "results.json").read_text() == before  # the run's own record is untouched
