"""Box metrics in wsolevaluation's 224 x 224 frame whatever the training size, and faithfulness
on the whole test split with ``metrics.images=all`` (issue 24 §3, §4)."""

from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from camexp.errors import UserError
from camexp.main import CONFIG_DIR
from camexp.metrics import CamQuality
from camexp.models.backbone import Output
from camexp.run.options import check_number_types


class IdentityCam(torch.nn.Module):
    """CAM == the image's first channel: features (B, 1, H, W), one class per weight row."""

    def forward(self, x):
        features = x[:, :1]
        weight = torch.ones(2, 1)
        logits = features.mean((2, 3)) @ weight.T  # GAP -> linear
        return Output(logits=logits, features=features, fc_weight=weight)


def folder_like(boxes):
    """Two 16 x 16 images with a bright 8 x 8 square at rows/cols 4..11 (the box view)."""
    images = torch.zeros(2, 3, 16, 16)
    images[:, :, 4:12, 4:12] = 1.0
    loader = [(images, torch.tensor([0, 1]))]
    return SimpleNamespace(test=loader, box_test=loader, test_boxes=boxes)


def test_folder_boxes_are_scored_in_the_box_size_frame():
    # wsolevaluation: the CAM is cv2.resize-d to the 224 frame the boxes were resize_bbox-ed to;
    # here the frame is 8: the square lands on rows/cols 2..5 there
    boxes = [torch.tensor([[2, 2, 5, 5]]).numpy()] * 2
    options = dict(faithfulness=False, cam_curve_interval=0.01, box_convention="tight")
    cpu = torch.device("cpu")
    framed = CamQuality(box_size=8, **options)(IdentityCam(), folder_like(boxes), cpu)
    assert framed["test/maxboxacc_v2"] == 100.0 and framed["test/box_size"] == 8
    # the same boxes read in the 16 px image frame miss the square (IoU 16/64 < 0.3)
    unframed = CamQuality(box_size=None, **options)(IdentityCam(), folder_like(boxes), cpu)
    assert unframed["test/maxboxacc_v2"] == 0.0 and unframed["test/box_size"] == 16


def compose_cfg(overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_cub_at_448_is_boxed_at_224_by_default():
    cfg = compose_cfg(["experiment=transfer_cub200_resnet50"])
    assert cfg.dataset.image_size == 448 and cfg.metrics.box_size == 224
    assert instantiate(cfg.metrics).box_size == 224


def test_faithfulness_on_all_test_images_and_bad_counts():
    quality = instantiate(compose_cfg(["metrics.images=all"]).metrics)
    assert quality.images is None
    images = torch.rand(5, 1, 8, 8)
    data = SimpleNamespace(test=[(images[:3], torch.tensor([0, 1, 0])),
                                 (images[3:], torch.tensor([1, 0]))],
                           test_boxes=None, mean=(0.5,), std=(0.5,))  # fmt: skip
    out = CamQuality(images="all", localization=False, deletion_step=16)(
        IdentityCam(), data, torch.device("cpu")
    )
    assert out["test/faithfulness_images"] == 5  # every batch, not the first 256
    for bad in (-1, "most", 2.5):
        with pytest.raises(UserError, match="metrics.images must be a count >= 0 .* or all"):
            CamQuality(images=bad)
    with pytest.raises(UserError, match="metrics.box_size must be a size in pixels or null"):
        CamQuality(box_size=0)


def test_the_word_all_passes_the_command_line_type_check():
    """``metrics.images=all`` is documented beside the number default; the type check of
    ``key=word`` overrides (issue 27 §11) refused it, and the CAM-quality evidence table with it."""
    check_number_types(["metrics.images=all", "metrics=default"])
    with pytest.raises(UserError, match="metrics.images=most must be a number"):
        check_number_types(["metrics.images=most"])
