"""Preprocessing shared by every format: resize, crop, flip, then a tensor in [-1, 1].

The choice of augmentation (`sample_params`) is separate from applying it (`transform_image`,
`transform_classes`), so that both halves of a pair, and an image and its class map, get the
very same crop and flip. The modes follow the official CycleGAN/pix2pix `get_params` and
`get_transform`; randomness comes only from the `random.Random` the caller passes, which
makes every sample reproducible from its seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from translate.config import DataConfig
from translate.errors import UserError

# Sizes in `preprocess=none` are rounded to a multiple of this, so that the generators'
# down- and up-sampling by two give back the input size (official __make_power_2, base 4).
SIZE_MULTIPLE = 4


@dataclass(frozen=True)
class AugmentParams:
    resize: tuple[int, int] | None  # (w, h) to resize to before cropping; None keeps the size
    crop: tuple[int, int, int, int] | None  # (x, y, w, h) box after resizing; None: no crop
    flip: bool  # mirror left-right after cropping


def _scaled_width_size(size: tuple[int, int], load_size: int, crop_size: int) -> tuple[int, int]:
    """Width to load_size keeping the aspect, height at least crop_size (official __scale_width)."""
    w, h = size
    if w == load_size and h >= crop_size:
        return size
    return load_size, int(max(load_size * h / w, crop_size))


def _multiple_of(size: tuple[int, int], base: int) -> tuple[int, int]:
    w, h = size
    return max(base, round(w / base) * base), max(base, round(h / base) * base)


def sample_params(cfg: DataConfig, size: tuple[int, int], rng: random.Random, train: bool) -> AugmentParams:
    """Draw the resize, crop and flip of one image of `size` = (w, h) for `cfg.preprocess`.

    In training the crop position and the flip are random. In evaluation nothing is random:
    no flip, crops at the top-left (as the official test with load_size == crop_size), and
    `resize_and_crop` resizes straight to crop_size so the whole image is seen.
    """
    mode = cfg.preprocess
    crop_size = cfg.crop_size
    resize: tuple[int, int] | None
    if mode == "resize_and_crop":
        side = cfg.load_size if train else crop_size
        resize = (side, side)
    elif mode in ("scale_width", "scale_width_and_crop"):
        resize = _scaled_width_size(size, cfg.load_size, crop_size)
    elif mode == "crop":
        resize = None
    elif mode == "none":
        resize = _multiple_of(size, SIZE_MULTIPLE)
    else:
        raise UserError(f"data.preprocess={mode} is unknown; use resize_and_crop, crop, scale_width, "
                        f"scale_width_and_crop or none")
    if resize == size:
        resize = None

    crop = None
    if mode.endswith("crop"):
        w, h = resize or size
        if crop_size > w or crop_size > h:
            raise UserError(f"an image of {w}x{h} (after preprocess={mode}) is smaller than "
                            f"data.crop_size={crop_size}; lower data.crop_size or raise data.load_size")
        if train:
            x, y = rng.randint(0, w - crop_size), rng.randint(0, h - crop_size)
        else:
            x, y = 0, 0
        if (x, y, crop_size, crop_size) != (0, 0, w, h):
            crop = (x, y, crop_size, crop_size)

    flip = train and cfg.flip and rng.random() > 0.5
    return AugmentParams(resize=resize, crop=crop, flip=flip)


def _apply(img: Image.Image, params: AugmentParams, resample: Image.Resampling) -> Image.Image:
    if params.resize is not None:
        img = img.resize(params.resize, resample)
    if params.crop is not None:
        x, y, w, h = params.crop
        img = img.crop((x, y, x + w, y + h))
    if params.flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img


def to_tensor(img: Image.Image, grayscale: bool = False) -> torch.Tensor:
    """An 8-bit RGB (or L) image as float32 CxHxW in [-1, 1]: ToTensor then Normalize(0.5, 0.5)."""
    img = img.convert("L") if grayscale else img.convert("RGB")
    array = np.asarray(img, dtype=np.float32)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array / 127.5 - 1.0).permute(2, 0, 1).contiguous()


def transform_image(img: Image.Image, params: AugmentParams, grayscale: bool = False) -> torch.Tensor:
    """Resize (bicubic, as official), crop and flip `img`, then a float32 tensor in [-1, 1]."""
    return to_tensor(_apply(img, params, Image.Resampling.BICUBIC), grayscale)


def transform_classes(classes: np.ndarray, params: AugmentParams) -> torch.Tensor:
    """The same resize (nearest: class ids must not blend), crop and flip on an HxW class map."""
    if classes.ndim != 2:
        raise ValueError(f"a class map must be HxW, got shape {classes.shape}")
    # PIL's 32-bit integer mode keeps any id and uses the same pixel grid as the image resize.
    as_image = Image.fromarray(np.ascontiguousarray(classes, dtype=np.int32))
    result = np.asarray(_apply(as_image, params, Image.Resampling.NEAREST))
    return torch.from_numpy(result.astype(np.int64))
