"""A named recipe is the command line it was measured with: experiment=fashion_wide_long composes
the same config as the time-to-accuracy entry `target95-wide-long` whose 3 seeds give its expected
numbers (scripts/reproduce/time_to_accuracy.sh), and differs from fashion_fast in the three values
the entry overrides."""

import shlex
from pathlib import Path

from omegaconf import OmegaConf
from test_configs import compose_with

ROOT = Path(__file__).resolve().parents[1]


def composed(*overrides: str) -> dict:
    return OmegaConf.to_container(compose_with(overrides))


def entry_overrides(name: str) -> list[str]:
    """The overrides of entry NAME ("name|seeds|every|overrides") of time_to_accuracy.sh."""
    script = (ROOT / "scripts" / "reproduce" / "time_to_accuracy.sh").read_text()
    (line,) = [row.strip() for row in script.splitlines() if row.strip().startswith(f'"{name}|')]
    return shlex.split(line.strip('"').split("|")[3])


def test_the_95_recipe_is_the_measured_entry():
    measured = entry_overrides("target95-wide-long")
    assert measured[0] == "experiment=fashion_fast"  # the entry spells the recipe out
    recipe = composed("experiment=fashion_wide_long")
    assert recipe == composed(*measured)
    assert recipe["epochs"] == 40 and recipe["backbone"]["kwargs"]["widths"] == [48, 96, 192]
    assert recipe["erasing"]["prob"] == 0.5
    fast = composed("experiment=fashion_fast")
    assert fast["epochs"] == 24 and fast["erasing"]["prob"] == 0.0
    assert fast["backbone"]["kwargs"]["widths"] == [32, 64, 128]
