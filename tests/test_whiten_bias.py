"""AirNet's ``whiten_bias_epochs`` (airbench94's ``whiten_bias_epochs: 3``): the whitening bias
trains in the first N epochs and is a constant after, which also skips the first conv group's
backward pass to its input. The schedule reaches the net through the one training loop
(``engine.train_one_epoch`` calls each submodule's ``set_epoch``), so a resumed run gets it too.
"""

import pytest
import torch
from test_configs import compose_with
from test_experiments import network

from camexp.data.regularizers import Regularizer
from camexp.engine import train_one_epoch
from camexp.errors import UserError
from camexp.losses import CrossEntropy, Objective
from camexp.models.airnet import AirNet
from camexp.run.checkpoint import config_difference, without_added_defaults


def airnet_from_config(*overrides):
    """The main job's backbone as its config builds it, on 16 px stand-in images."""
    cfg = compose_with(["device=cpu", *overrides])
    return network(cfg.backbone, 1, 16, needs_cam=True)


def one_epoch(model, epoch, lr=0.5):
    """One epoch of two steps through camexp's loop; returns the whitening bias after it."""
    torch.manual_seed(epoch)
    images = torch.randn(2, 8, 1, 16, 16)
    labels = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7], [7, 6, 5, 4, 3, 2, 1, 0]])
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    train_one_epoch(
        model, Objective({"ce": CrossEntropy()}), list(zip(images, labels, strict=True)),
        optimizer, scheduler, Regularizer(10), torch.device("cpu"), epoch=epoch,
    )  # fmt: skip
    return whiten(model).bias.detach().clone()


def whiten(model):
    (found,) = [m for m in model.modules() if isinstance(m, AirNet)]
    return found.conv1


def test_the_config_default_trains_the_bias_in_every_epoch():
    model = airnet_from_config()
    biases = [whiten(model).bias.detach().clone()] + [one_epoch(model, e) for e in range(4)]
    for before, after in zip(biases, biases[1:], strict=False):
        assert not torch.equal(before, after)


def test_the_bias_trains_for_the_first_n_epochs_then_stays():
    model = airnet_from_config("backbone.kwargs.whiten_bias_epochs=2")
    start = whiten(model).bias.detach().clone()
    b0, b1, b2, b3 = (one_epoch(model, e) for e in range(4))
    assert not torch.equal(start, b0) and not torch.equal(b0, b1)  # epochs 0 and 1 train it
    assert torch.equal(b1, b2) and torch.equal(b2, b3)  # no update, no weight decay after
    # what a resumed run does: the loop sets the schedule from the epoch it starts at
    assert not whiten(model).bias_trains
    one_epoch(model, 1)
    assert whiten(model).bias_trains


def test_a_frozen_bias_stops_the_gradient_at_the_first_conv_group():
    model = airnet_from_config("backbone.kwargs.whiten_bias_epochs=1")
    (net,) = [m for m in model.modules() if isinstance(m, AirNet)]
    x = torch.randn(4, 1, 16, 16)
    net.conv1.set_epoch(0)
    assert net.act(net.conv1(x)).requires_grad  # the bias needs the first group's input grad
    net.conv1.set_epoch(1)
    assert not net.act(net.conv1(x)).requires_grad  # so that backward pass is skipped
    model(x).logits.sum().backward()
    assert net.conv1.bias.grad is None
    assert net.layer1.layers[0].weight.grad is not None  # the rest still trains


def test_zero_epochs_never_trains_the_bias():
    model = airnet_from_config("backbone.kwargs.whiten_bias_epochs=0")
    start = whiten(model).bias.detach().clone()
    assert torch.equal(one_epoch(model, 0), start)


@pytest.mark.parametrize(
    "overrides", [["backbone.kwargs.whiten_bias_epochs=-1"],
                  ["backbone.kwargs.whiten_bias_epochs=2.5"],
                  ["backbone.kwargs.whiten_bias_epochs=abc"],
                  ["backbone.kwargs.whiten_bias_epochs=true"],
                  ["backbone.kwargs.whiten_bias_epochs=3", "backbone.kwargs.whiten=false"]],
)  # fmt: skip
def test_a_bad_count_or_no_whitening_is_a_user_error(overrides):
    with pytest.raises(UserError, match="whiten_bias_epochs"):
        airnet_from_config(*overrides)


def test_runs_and_cached_seeds_from_before_the_option_still_match_while_it_is_off():
    """A checkpoint or a benchmark cache written before ``whiten_bias_epochs`` existed lacks the
    key; with it null (the bias trains throughout, as before) it must still resume and be reused,
    and with it set it is a different recipe."""
    old = {"backbone": {"name": "airnet", "kwargs": {"widths": [32, 64, 128], "whiten": True}}}
    off = {"backbone": {"name": "airnet",
                        "kwargs": {"widths": [32, 64, 128], "whiten": True,
                                   "whiten_bias_epochs": None}}}  # fmt: skip
    on = {"backbone": {"name": "airnet",
                       "kwargs": {"widths": [32, 64, 128], "whiten": True,
                                  "whiten_bias_epochs": 3}}}  # fmt: skip
    assert config_difference(old, off) == []
    assert config_difference(old, on) == ["backbone.kwargs.whiten_bias_epochs"]
    assert without_added_defaults(off) == old  # what bench_tta's cache identity records
    assert without_added_defaults(on) == on
    other = {"dataset": {"kwargs": {"whiten_bias_epochs": None}}}  # only at that path
    assert without_added_defaults(other) == other


def test_data_parallel_training_goes_on_once_the_bias_is_frozen(tmp_path, monkeypatch):
    """Under DDP a parameter without a gradient stalls the next step unless DDP looks for unused
    parameters; camexp's wrapper asks for that when the net says it leaves one unused. A
    one-process gloo group stands in for torchrun's."""
    import torch.distributed as dist

    from camexp.run import distributed

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0,
                            world_size=1)  # fmt: skip
    monkeypatch.setenv("WORLD_SIZE", "2")  # what makes camexp's wrapper wrap
    try:
        model = distributed.wrap(airnet_from_config("backbone.kwargs.whiten_bias_epochs=1"),
                                 torch.device("cpu"))  # fmt: skip
        assert isinstance(model, torch.nn.parallel.DistributedDataParallel)
        b0 = one_epoch(model, 0)
        b1 = one_epoch(model, 1)  # two steps with the bias frozen
        b2 = one_epoch(model, 2)
        assert torch.equal(b0, b1) and torch.equal(b1, b2)
    finally:
        dist.destroy_process_group()
