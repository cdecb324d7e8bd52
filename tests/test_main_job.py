"""The main job is one recipe (issues 23, 25 and 27.1): plain ``camexp``, ``scripts/run.sh`` and
``experiment=fashion_main`` compose the same config (``fashion_airnet`` for 12 epochs with TTA
evaluated beside), the README's baseline differs from it in ``loss.cam.weight`` alone, and the
old name ``fashion_resnet20`` is a warned alias of the 8-epoch ``fashion_airnet``."""

import re
import shlex
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from camexp.main import CONFIG_DIR
from camexp.run.options import renamed_options

ROOT = Path(__file__).resolve().parents[1]


def composed(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=False)


def flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def differing(a: dict, b: dict) -> set:
    fa, fb = flat(a), flat(b)
    return {k for k in fa.keys() | fb.keys() if fa.get(k, "<absent>") != fb.get(k, "<absent>")}


def test_plain_camexp_is_the_main_job():
    plain = composed()
    assert plain == composed("experiment=fashion_main")
    assert plain["backbone"]["name"] == "airnet" and plain["epochs"] == 12
    assert plain["tta"] == "flip_translate"  # test_tta/* beside test/*, never replacing it
    assert plain["regularizer"]["label_smoothing"] == 0.1 and plain["loss"]["cam"]["weight"] == 1.0
    # the evidence tables' 8-epoch recipe is fashion_airnet, and the main job differs from it in
    # its length and its TTA alone
    assert differing(plain, composed("experiment=fashion_airnet")) == {"epochs", "tta"}
    assert composed("experiment=fashion_airnet")["epochs"] == 8


def test_run_sh_passes_the_overrides_on_unchanged():
    """scripts/run.sh must not put a recipe in front of the user's overrides only when there are
    none (the bug of issue 27.1: `scripts/run.sh loss.cam.weight=0` trained another recipe)."""
    script = (ROOT / "scripts" / "run.sh").read_text()
    commands = [line for line in script.splitlines() if not line.lstrip().startswith("#")]
    assert not any(re.search(r"\bset --", line) for line in commands), script
    assert any(line.strip() == 'exec "$VENV/bin/camexp" "$@"' for line in commands), script


def readme_run_lines() -> dict:
    """The README's `scripts/run.sh ...  # comment` lines: {comment: overrides}."""
    lines = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        m = re.match(r"scripts/run\.sh (\S.*?)\s+#\s*(.+)$", line)
        if m and not m.group(1).startswith("["):
            lines[m.group(2)] = shlex.split(m.group(1))
    return lines


def test_the_readme_baseline_differs_from_the_main_job_in_the_cam_weight_alone():
    lines = readme_run_lines()
    (baseline,) = [args for comment, args in lines.items() if "baseline" in comment]
    assert differing(composed(*baseline), composed()) == {"loss.cam.weight"}


def test_the_readme_sweep_compares_like_with_like():
    (sweep,) = [args for args in readme_run_lines().values() if "-m" in args]
    values = [a for a in sweep if a != "-m"]
    weight = next(a for a in values if a.startswith("loss.cam.weight="))
    fixed = [a for a in values if "," not in a]  # every job shares these
    for w in weight.split("=", 1)[1].split(","):
        job = composed(*fixed, f"loss.cam.weight={w}", "seed=0")
        changed = differing(job, composed("seed=0"))
        assert changed <= {"loss.cam.weight"}, changed


def test_the_old_experiment_name_is_a_warned_alias():
    assert composed("experiment=fashion_resnet20") == composed("experiment=fashion_airnet")
    (note,) = renamed_options(["experiment=fashion_resnet20", "seed=1"])
    assert "experiment=fashion_airnet" in note
    assert renamed_options(["experiment=fashion_airnet"]) == []
