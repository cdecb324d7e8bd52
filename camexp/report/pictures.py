"""CAM and CAAM pictures: image | target CAM | CAAM rows for a fixed set of images."""

import torch
import torch.nn.functional as F

from camexp.cam import class_agnostic_map, normalize, target_cam


def heat(maps: torch.Tensor) -> torch.Tensor:
    """Map [0, 1] values (B, H, W) to RGB (B, 3, H, W) with a blue -> green -> red ramp."""
    m = maps.clamp(0, 1)
    red = (2 * m - 1).clamp(0, 1)
    blue = (1 - 2 * m).clamp(0, 1)
    green = 1 - red - blue
    return torch.stack([red, green, blue], dim=1)


@torch.no_grad()
def cam_grid(model, images: torch.Tensor, labels: torch.Tensor, mean, std) -> torch.Tensor:
    """A (3, H', W') grid: one row per image with the image, its target CAM and its CAAM,
    the maps min-max normalised and upsampled bilinearly to the image size."""
    from torchvision.utils import make_grid

    was_training = model.training
    model.eval()
    out = model(images)
    model.train(was_training)
    size = images.shape[-2:]
    shape = (1, -1, 1, 1)
    pixels = images.float() * torch.tensor(std, device=images.device).view(shape)
    pixels = (pixels + torch.tensor(mean, device=images.device).view(shape)).clamp(0, 1)
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    tiles = [pixels.float().cpu()]
    maps = [class_agnostic_map(out.features.float())]
    if out.fc_weight is not None:
        maps.insert(0, target_cam(out.features.float(), out.fc_weight.float(), labels))
    for m in maps:  # (B, h, w)
        up = F.interpolate(m[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        tiles.append(heat(normalize(up)).cpu())
    rows = torch.stack(tiles, dim=1).flatten(0, 1)  # (B * columns, 3, H, W)
    return make_grid(rows, nrow=len(tiles), padding=1, pad_value=1.0)


def save_png(grid: torch.Tensor, path: str, scale: int = 4) -> None:
    from torchvision.utils import save_image

    if scale > 1:
        grid = F.interpolate(grid[None], scale_factor=scale, mode="nearest")[0]
    save_image(grid, path)
