"""Pictures a reader understands (#16): titled columns, true and predicted class names per row,
a colorbar, torchcam's overlay, and a TensorBoard grid large enough to read."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from camexp.models.backbone import build_backbone
from camexp.report.pictures import (
    cam_figure,
    cam_grid,
    heat,
    model_columns,
    overlay,
    save_figure,
    tile,
)

CLASSES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot"]  # fmt: skip


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_backbone("resnet20", 10, 1, 28, needs_cam=True).eval()


def figure_texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")) if t.get_text()]


def test_torchcam_overlay_is_jet_of_the_squared_map_under_70_percent_image():
    # jet(0) = (0, 0, 0.5) and jet(1) = (0.5, 0, 0) (matplotlib's jet end points)
    colours = heat(torch.tensor([[[0.0, 1.0]]]))[0, :, 0, :].T  # (2 pixels, RGB)
    torch.testing.assert_close(colours, torch.tensor([[0.0, 0.0, 0.5], [0.5, 0.0, 0.0]]),
                               atol=1e-6, rtol=0)  # fmt: skip
    white = torch.ones(1, 3, 1, 2)
    blend = overlay(white, torch.tensor([[[0.0, 1.0]]]))[0, :, 0, :].T
    torch.testing.assert_close(blend, torch.tensor([[0.7, 0.7, 0.85], [0.85, 0.7, 0.7]]),
                               atol=1e-6, rtol=0)  # fmt: skip
    # squared before colouring: 0.5 is coloured as jet(0.25), which is blue-cyan (no red)
    assert heat(torch.tensor([[[0.5]]]))[0, 0, 0, 0].item() == pytest.approx(0.0, abs=1e-6)


def test_the_training_figure_titles_columns_names_classes_and_has_a_colorbar(model):
    images, labels = torch.randn(3, 1, 28, 28), torch.tensor([0, 7, 9])
    columns, preds = model_columns(model, images, labels)
    assert [t for t, _ in columns] == ["CAM (true class)", "CAAM"]
    assert all(m.shape == (3, 28, 28) and 0 <= m.min() and m.max() <= 1 for _, m in columns)
    pairs = zip(labels.tolist(), preds.tolist(), strict=True)
    texts = [f"true: {CLASSES[y]}\npred: {CLASSES[p]}" for y, p in pairs]
    pixels = torch.rand(3, 3, 28, 28)
    fig = cam_figure(pixels, columns, texts, [True, False, False])
    labels_drawn = [t for t in fig.axes[0].texts]
    assert [t.get_text() for t in labels_drawn[:3]] == ["image", "CAM (true class)", "CAAM"]
    rows = labels_drawn[3:]
    assert rows[1].get_text().startswith("true: Sneaker\npred: ") and len(rows) == 3
    assert rows[0].get_color() == "red" and rows[1].get_color() == "black"  # wrong stands out
    assert any(t.startswith("map value (min-max per map)") for t in figure_texts(fig))
    # the image column is the image; the CAM column its overlay (torchcam style)
    assert np.allclose(tile(fig, 2, 0), pixels[2].permute(1, 2, 0).numpy())
    blend = overlay(pixels[1:2], columns[0][1][1:2])[0].permute(1, 2, 0).clamp(0, 1).numpy()
    assert np.allclose(tile(fig, 1, 1), blend, atol=1e-6)


def test_the_tensorboard_grid_is_large_enough_to_read(model):
    grid = cam_grid(model, torch.randn(2, 1, 28, 28), torch.tensor([1, 2]), (0.286,), (0.353,),
                    CLASSES)  # fmt: skip
    assert grid.shape[0] == 3 and grid.shape[2] >= 400  # the old grid was 88 px wide
    assert 0 <= grid.min() and grid.max() <= 1


def test_save_figure_writes_a_png_and_no_temp(tmp_path, model):
    columns, _ = model_columns(model, torch.randn(1, 1, 28, 28), torch.tensor([3]))
    fig = cam_figure(torch.rand(1, 3, 28, 28), columns, ["true: Dress"], title="A = run")
    assert fig._suptitle.get_text() == "A = run"
    assert [t.get_text() for t in fig.axes[0].texts] == ["image", "CAM (true class)", "CAAM",
                                                         "true: Dress"]  # fmt: skip
    save_figure(fig, str(tmp_path / "cams.png"))
    assert (tmp_path / "cams.png").read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in tmp_path.iterdir()] == ["cams.png"]


def test_the_plot_of_a_loss_is_not_labelled_percent(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from camexp.report import plot
    from camexp.report.runs import Group

    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "metrics.csv").write_text("epoch,train/cam\n1,0.3\n2,0.2\n")
    run = type("R", (), {"path": str(tmp_path / "r")})()
    seen = {}
    real_savefig = plt.Figure.savefig

    def spy(fig, *args, **kwargs):
        seen["ylabel"] = fig.axes[0].get_ylabel()
        seen["title"] = fig.axes[0].get_title()
        return real_savefig(fig, *args, **kwargs)

    plt.Figure.savefig = spy
    try:
        plot.plot_curves([Group((("loss.cam.weight", "1"),), [run])], str(tmp_path / "c.png"),
                         column="train/cam")  # fmt: skip
    finally:
        plt.Figure.savefig = real_savefig
    assert seen["ylabel"] == "train/cam" and "train/cam" in seen["title"]
