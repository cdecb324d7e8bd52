"""Corrupt data is reported with its path: stop (default) or skip with a record of what was left."""

import os

import pytest
import torch

from camexp.data.folder import folder_loader, folder_transform, image_folder
from camexp.errors import UserError


@pytest.fixture
def folder_with_a_broken_image(tmp_path):
    from conftest import write_imagefolder

    root = write_imagefolder(str(tmp_path), classes=2, per_class=3, size=16)
    first_class = sorted(os.listdir(os.path.join(root, "train")))[0]
    broken = os.path.join(root, "train", first_class, "broken.png")
    with open(broken, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n this is not an image")
    return root, broken


def loader_for(root, on_corrupt, workers=0):
    dataset = image_folder(root, "train")
    dataset.transform = folder_transform(False, 16, (0.5,) * 3, (0.5,) * 3)
    return folder_loader(dataset, 4, train=False, workers=workers, device=torch.device("cpu"),
                         on_corrupt=on_corrupt)  # fmt: skip


@pytest.mark.parametrize("workers", [0, 2])
def test_stop_names_the_file(folder_with_a_broken_image, workers):
    root, broken = folder_with_a_broken_image
    with pytest.raises(UserError, match="unreadable image .*broken.png") as err:
        list(loader_for(root, "stop", workers))
    assert "\n" not in str(err.value) and "on_corrupt=skip" in str(err.value)


def test_skip_yields_the_readable_images_and_records_the_broken_one(folder_with_a_broken_image):
    root, broken = folder_with_a_broken_image
    loader = loader_for(root, "skip")
    labels = torch.cat([labels for _, labels in loader])
    assert len(labels) == 6  # 7 files, one unreadable
    assert loader.skipped == [broken]


def test_unknown_policy_is_refused(folder_with_a_broken_image):
    root, _ = folder_with_a_broken_image
    with pytest.raises(UserError, match="on_corrupt='ignore'"):
        loader_for(root, "ignore")
