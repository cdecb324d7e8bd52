"""Random erasing (issue 25's options): the boxes are timm's RandomErasing boxes, drawn from the
loader's generator so a resumed run erases the same boxes, on training batches only."""

import math
import random as pyrandom

import pytest
import torch
from timm.data import random_erasing as timm_erasing

from camexp.data.erasing import ATTEMPTS, Erasing, boxes_from, draw_uniforms, erase_boxes
from camexp.data.memory import InMemoryLoader
from camexp.errors import UserError


class Replay:
    """Stands in for Python's ``random`` inside timm's RandomErasing: returns one image's
    uniforms in the order timm asks for them (erase?, then per attempt area, aspect and, on the
    attempt that fits, top and left)."""

    def __init__(self, row):
        self.row = [float(v) for v in row]
        self.uniform_calls = 0
        self.randint_calls = 0

    def random(self):
        return self.row[0]

    def uniform(self, a, b):
        attempt, which = divmod(self.uniform_calls, 2)
        self.uniform_calls += 1
        return a + (b - a) * self.row[1 + 4 * attempt + which]

    def randint(self, a, b):
        attempt = (self.uniform_calls - 1) // 2  # the attempt that just fitted
        u = self.row[1 + 4 * attempt + 2 + self.randint_calls]
        self.randint_calls += 1
        return a + math.floor(u * (b - a + 1))


def timm_box(row, height, width, erasing, monkeypatch):
    """The box timm's own _erase fills, found from the zeros it writes into an image of ones."""
    monkeypatch.setattr(timm_erasing, "random", Replay(row))
    timm = timm_erasing.RandomErasing(
        probability=erasing.prob, min_area=erasing.scale[0], max_area=erasing.scale[1],
        min_aspect=erasing.ratio, mode="const", device="cpu",
    )  # fmt: skip
    image = torch.ones(1, height, width)
    timm(image)
    zero = (image[0] == 0).nonzero()
    if len(zero) == 0:
        return (0, 0)
    top, left = zero.min(0).values.tolist()
    bottom, right = zero.max(0).values.tolist()
    return (top, left, bottom - top + 1, right - left + 1)


@pytest.mark.parametrize(("height", "width", "scale", "ratio"),
                         [(28, 28, (0.02, 1 / 3), 0.3), (12, 20, (0.3, 0.95), 0.5)])  # fmt: skip
def test_boxes_are_timms_boxes_for_the_same_draws(height, width, scale, ratio, monkeypatch):
    erasing = Erasing(prob=0.7, scale=scale, ratio=ratio)
    uniforms = draw_uniforms(400, torch.Generator().manual_seed(0))
    # every attempt but the last too large for some images: the first fitting one must be taken
    uniforms[::5, 1 : 1 + 4 * (ATTEMPTS - 1) : 4] = 0.9999
    uniforms[::5, 2 : 2 + 4 * (ATTEMPTS - 1) : 4] = 0.9999
    ours = boxes_from(uniforms, height, width, erasing)
    erased = 0
    for row, box in zip(uniforms, ours, strict=True):
        expected = timm_box(row, height, width, erasing, monkeypatch)
        got = tuple(box.tolist()) if box[2] > 0 else (0, 0)
        assert got == expected, (row[:5], got, expected)
        erased += box[2].item() > 0
    assert 0.55 * 400 < erased < 0.8 * 400  # about prob of the images, some with no fit


def test_erasing_fills_only_the_box_and_the_modes_fill_as_stated():
    images = torch.full((3, 2, 6, 7), 5.0)
    boxes = torch.tensor([[1, 2, 3, 4], [0, 0, 0, 0], [5, 6, 1, 1]])
    out = erase_boxes(images, boxes, "const", torch.Generator().manual_seed(0))
    expected = images.clone()
    expected[0, :, 1:4, 2:6] = 0.0
    expected[2, :, 5, 6] = 0.0
    torch.testing.assert_close(out, expected)
    pixel = erase_boxes(torch.full((64, 3, 16, 16), 5.0), torch.tensor([[0, 0, 16, 16]] * 64),
                        "pixel", torch.Generator().manual_seed(0))  # fmt: skip
    assert abs(pixel.mean().item()) < 0.05 and abs(pixel.std().item() - 1) < 0.05
    rand = erase_boxes(torch.full((4, 3, 5, 5), 5.0), torch.tensor([[0, 0, 5, 5]] * 4), "rand",
                       torch.Generator().manual_seed(0))  # fmt: skip
    assert (rand == rand[:, :, :1, :1]).all() and rand[:, :, 0, 0].std() > 0  # a colour per box


def _loader(erasing, train=True, seed=3):
    images = torch.randint(0, 256, (40, 1, 10, 10), dtype=torch.uint8)
    labels = torch.arange(40) % 4
    return InMemoryLoader(images, labels, 8, mean=(0.5,), std=(0.25,), train=train,
                          erasing=erasing, seed=seed)  # fmt: skip


def test_the_loader_erases_training_batches_only_and_resumes_the_same_boxes():
    torch.manual_seed(0)
    erasing = Erasing(prob=1.0, scale=(0.2, 0.3))
    plain = [b for b, _ in _loader(None)]
    torch.manual_seed(0)
    erased = [b for b, _ in _loader(erasing)]
    pairs = zip(plain, erased, strict=True)
    changed = sum((a != b).any(dim=(1, 2, 3)).sum().item() for a, b in pairs)
    assert changed == 40  # prob 1: every training image has a box
    zeros = sum((b == 0).sum().item() for b in erased)
    assert 40 * 100 * 0.15 < zeros  # each box covers 20-30 % of a 10x10 image
    torch.manual_seed(0)
    evaluation = [b for b, _ in _loader(erasing, train=False)]
    torch.manual_seed(0)
    untouched = [b for b, _ in _loader(None, train=False)]
    assert all(torch.equal(a, b) for a, b in zip(evaluation, untouched, strict=True))

    torch.manual_seed(0)
    loader = _loader(erasing)
    batches = iter(loader)
    first = [next(batches)[0] for _ in range(2)]
    state = loader.state_dict()  # mid-epoch
    rest = [b for b, _ in batches]
    torch.manual_seed(0)
    again = _loader(erasing, seed=99)  # another seed: only the saved state can make it match
    again.load_state_dict(state)
    resumed = [b for b, _ in again]
    assert len(first) == 2 and len(rest) == 3
    assert all(torch.equal(a, b) for a, b in zip(rest, resumed, strict=True))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"prob": 1.5}, "erasing.prob=1.5"), ({"prob": 0.5, "scale": (0.5, 0.2)}, "erasing.scale"),
     ({"prob": 0.5, "ratio": 3.0}, "erasing.ratio=3.0"),
     ({"prob": 0.5, "mode": "noise"}, "erasing.mode='noise'")],
)  # fmt: skip
def test_bad_settings_are_one_line(kwargs, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(".", r"\.")):
        Erasing(**kwargs)


@pytest.mark.parametrize(
    ("override", "message"),
    [("erasing.prob=abc", "erasing.prob=abc must be a number"),
     ("erasing.scale=[0.5]", "needs two numbers"),
     ("erasing.scale=0.5", "take a number"), ("erasing.prob=1.5", "erasing.prob=1.5")],
)  # fmt: skip
def test_bad_settings_on_the_command_line_exit_2_with_one_line(tmp_path, override, message):
    import os
    import subprocess
    import sys

    env = {**os.environ, "CAMEXP_OUTPUT_DIR": str(tmp_path / "out"), "HYDRA_FULL_ERROR": ""}
    done = subprocess.run(
        [sys.executable, "-m", "camexp", "debug=smoke", "dataset=digits28", override,
         "progress=false", "tensorboard=false", "metrics=none"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and message in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    left = list((tmp_path / "out").rglob("results.json")) if (tmp_path / "out").exists() else []
    assert not left  # nothing a report would list


def test_pyrandom_is_not_what_draws_the_boxes():
    """The boxes come from the loader's generator: Python's global random state is untouched."""
    state = pyrandom.getstate()
    list(_loader(Erasing(prob=1.0)))
    assert pyrandom.getstate() == state
