"""Issue 17's optimisation options: lookahead (timm's wrapper), alternating flip (airbench) and the
learning rate scaled for the batch. Expected values are worked out by hand in the tests."""

import io

import pytest
import torch
from hydra import compose, initialize_config_dir
from timm.optim import Lookahead
from torch import nn

from camexp.data.memory import InMemoryLoader
from camexp.data.regularizers import Regularizer
from camexp.engine import train_one_epoch
from camexp.errors import UserError
from camexp.models.backbone import Output
from camexp.run.recompose import CONFIG_DIR
from camexp.training.model import build_loss
from camexp.training.optim import build_optimizer, build_scheduler


def compose_cfg(overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def optimizer_for(overrides, model=None):
    cfg = compose_cfg(["optim.weight_decay=0", "optim.momentum=0", "optim.nesterov=false",
                       *overrides])  # fmt: skip
    model = model or nn.Linear(3, 1, bias=False)
    return build_optimizer(cfg, model), model


# ----------------------------------------------------------------------------- lr scaling
@pytest.mark.parametrize(
    ("rule", "batch", "expected"),
    [("none", 512, 0.1), ("linear", 512, 0.4), ("linear", 64, 0.05), ("sqrt", 512, 0.2)],
)
def test_every_group_lr_is_scaled_for_the_batch(rule, batch, expected):
    optimizer, _ = optimizer_for([f"optim.lr_scaling.rule={rule}", f"batch_size={batch}",
                                  "optim.lr=0.1"])  # fmt: skip
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([expected] * 2)
    cfg = compose_cfg([f"optim.lr_scaling.rule={rule}", f"batch_size={batch}", "optim.lr=0.1"])
    scheduler = build_scheduler(cfg, optimizer, steps_per_epoch=10)
    assert scheduler.base_lrs == pytest.approx([expected] * 2)  # the schedule starts there


def test_lr_scaling_base_batch_and_bad_values():
    optimizer, _ = optimizer_for(["optim.lr_scaling.rule=linear", "optim.lr_scaling.base_batch=256",
                                  "batch_size=1024", "optim.lr=0.1"])  # fmt: skip
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.4)
    with pytest.raises(UserError, match="lr_scaling.rule='square'"):
        optimizer_for(["optim.lr_scaling.rule=square"])
    with pytest.raises(UserError, match="base_batch=0"):
        optimizer_for(["optim.lr_scaling.rule=linear", "optim.lr_scaling.base_batch=0"])


# ----------------------------------------------------------------------------- lookahead
def test_lookahead_takes_alpha_of_the_way_every_k_steps():
    optimizer, model = optimizer_for(["optim.lookahead.k=2", "optim.lookahead.alpha=0.5",
                                      "optim.lr=0.1"])  # fmt: skip
    assert isinstance(optimizer, Lookahead)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0, 3.0]]))
    x = torch.tensor([[1.0, 0.0, -1.0]])  # d(w.x)/dw = x: each SGD step moves w by -0.1 * x
    seen = []
    for _ in range(4):
        optimizer.zero_grad()
        model(x).sum().backward()
        optimizer.step()
        seen.append(model.weight.detach().clone())
    # timm creates the slow copy at the first sync, from the fast weights then (not from w_0):
    # step 1: fast 1 - 0.1 = 0.9; step 2: fast 0.8, slow := 0.8 (no pull back the first time);
    # step 3: fast 0.7; step 4: fast 0.6, slow 0.8 + 0.5 * (0.6 - 0.8) = 0.7, fast = slow
    assert [round(float(w[0, 0]), 6) for w in seen] == [0.9, 0.8, 0.7, 0.7]
    assert [round(float(w[0, 2]), 6) for w in seen] == [3.1, 3.2, 3.3, 3.3]


def test_lookahead_syncs_at_the_epoch_end_and_its_state_loads_weights_only():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))

    class Net(nn.Module):  # what the engine calls: an Output with logits
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x):
            return Output(self.net(x), x, None)

    optimizer, _ = optimizer_for(["optim.lookahead.k=2"], model)
    images = torch.randint(0, 256, (12, 1, 4, 4), dtype=torch.uint8)
    loader = InMemoryLoader(images, torch.arange(12) % 3, 4, mean=(0.5,), std=(0.5,), train=True)
    objective = build_loss(compose_cfg(["loss=[ce]"]))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    train_one_epoch(Net(), objective, loader, optimizer, scheduler, Regularizer(3),
                    torch.device("cpu"), epoch=0)  # fmt: skip
    # 3 steps with k=2: without the sync the fast weights would be one step past the slow ones
    saved = optimizer.state_dict()  # timm keeps the slow weights in the base optimizer's state
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, p in enumerate(params):
        assert torch.equal(p, saved["state"][index]["lookahead_slow_buff"])
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    again, _ = optimizer_for(["optim.lookahead.k=2"], model)
    again.load_state_dict(state)
    assert [g["lookahead_step"] for g in again.param_groups] == [3, 3]


def test_lookahead_bad_alpha_is_one_line():
    with pytest.raises(UserError, match="optim.lookahead"):
        optimizer_for(["optim.lookahead.k=2", "optim.lookahead.alpha=1.5"])


# ----------------------------------------------------------------------------- alternating flip
def asymmetric_images(n):
    images = torch.zeros(n, 1, 3, 3, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(1, n + 1, dtype=torch.uint8)  # marks the left edge
    return images


def epoch_views(loader):
    """{image id: True if shown flipped} for one epoch (the id is read from the marked pixel)."""
    shown = {}
    for batch, _ in loader:
        raw = (batch * loader.std + loader.mean).round()  # back to pixel values
        for image in raw:
            left, right = int(image[0, 0, 0]), int(image[0, 0, 2])
            shown[max(left, right)] = right > 0
    return shown


def test_alternating_flip_shows_each_image_both_ways_every_two_epochs():
    images = asymmetric_images(32)
    loader = InMemoryLoader(images, torch.zeros(32, dtype=torch.long), 8, mean=(0.0,),
                            std=(1.0,), train=True, hflip="alternate", seed=3)  # fmt: skip
    first, second, third = epoch_views(loader), epoch_views(loader), epoch_views(loader)
    assert sorted(first) == list(range(1, 33))
    assert all(second[i] != first[i] for i in first)  # the other way round
    assert third == first
    assert 4 <= sum(first.values()) <= 28  # random bits, not all one way (p < 1e-5 otherwise)
    random = InMemoryLoader(images, torch.zeros(32, dtype=torch.long), 8, mean=(0.0,), std=(1.0,),
                            train=True, hflip=True, seed=3)  # fmt: skip
    a, b = epoch_views(random), epoch_views(random)
    assert any(a[i] == b[i] for i in a)  # independent flips repeat an orientation


def test_alternating_flip_resumes_mid_epoch_on_the_right_parity():
    images = asymmetric_images(32)

    def make():
        return InMemoryLoader(images, torch.zeros(32, dtype=torch.long), 8, mean=(0.0,),
                              std=(1.0,), train=True, hflip="alternate", seed=5)  # fmt: skip

    loader = make()
    epoch_views(loader)
    batches = iter(loader)  # epoch 2, two of four batches
    next(batches), next(batches)
    state = loader.state_dict()
    rest = [b for b, _ in batches]
    resumed = make()
    resumed.load_state_dict(state)
    again = [b for b, _ in resumed]
    assert len(again) == 2 and all(torch.equal(x, y) for x, y in zip(rest, again, strict=True))
    assert epoch_views(resumed) == epoch_views(make())  # epoch 3 has epoch 1's parity


def test_bad_flip_mode_is_refused():
    with pytest.raises(UserError, match="dataset.hflip='sometimes'"):
        InMemoryLoader(asymmetric_images(4), torch.zeros(4, dtype=torch.long), 2, mean=(0.0,),
                       std=(1.0,), train=True, hflip="sometimes")  # fmt: skip


# ----------------------------------------------------------------------------- whitening ablation
def test_airnet_without_whitening_trains_a_stem_of_the_same_shape():
    import timm

    whitened = timm.create_model("airnet", num_classes=10, in_chans=1)
    plain = timm.create_model("airnet", num_classes=10, in_chans=1, whiten=False)
    names = {n for n, p in plain.named_parameters() if n.startswith("conv1.")}
    assert names == {"conv1.weight", "conv1.bias"}  # trains; the whitened stem trains its bias only
    assert {n for n, _ in whitened.named_parameters() if n.startswith("conv1.")} == {"conv1.bias"}
    assert plain.conv1.weight.shape == whitened.conv1.weight.shape == (8, 1, 2, 2)
    x = torch.randn(2, 1, 28, 28)
    assert plain(x).shape == whitened.train()(x).shape == (2, 10)
