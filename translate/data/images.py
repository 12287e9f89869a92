"""Finding and reading image files, with one clear error for every way a file can be bad."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from translate.errors import UserError

# The extensions the official CycleGAN/pix2pix `make_dataset` accepts (compared lower-cased).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp")


class BadImageError(UserError):
    """A file that should be an image cannot be read; the message names it and says why."""

    def __init__(self, message: str, path: Path | str | None = None):
        super().__init__(message)
        self.path = path  # the bad file, for the list of skipped files


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMG_EXTENSIONS


def list_images(folder: Path, layout: str) -> list[Path]:
    """Every image file under `folder` (recursively), sorted by path.

    `layout` describes what the format expects, e.g. "unaligned: ROOT/trainA, ROOT/trainB,
    ROOT/testA, ROOT/testB"; it goes into the error when the folder is missing or empty.
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise UserError(f"{folder} {what}; expected the layout {layout}")
    found = []
    # followlinks: datasets are often assembled from symlinked folders.
    for dirpath, _, filenames in os.walk(folder, followlinks=True):
        found += [Path(dirpath) / name for name in filenames if is_image_file(Path(name))]
    if not found:
        raise UserError(f"no images ({' '.join(IMG_EXTENSIONS)}) in {folder}; expected the layout {layout}")
    return sorted(found)


def open_image(path: Path) -> Image.Image:
    """Open and fully decode `path` in its own mode, or raise BadImageError saying why not."""
    path = Path(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise BadImageError(f"image {path} {what}; check the dataset folder", path)
    if path.stat().st_size == 0:
        raise BadImageError(f"image {path} is empty (0 bytes); replace or delete it", path)
    limit = Image.MAX_IMAGE_PIXELS
    try:
        # PIL only warns between MAX_IMAGE_PIXELS and twice that; a warning raised as an error
        # stops such a file before it is decoded into memory.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # `with` closes the file even when decoding fails; the decoded pixels stay usable.
            with Image.open(path) as img:
                img.load()  # decode now, so a truncated file fails here and not in a transform
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImageError(f"image {path} has more than {limit} pixels (PIL.Image.MAX_IMAGE_PIXELS, a guard "
                            f"against decompression bombs); shrink it or raise that limit", path) from None
    except Image.UnidentifiedImageError:
        raise BadImageError(f"{path} is not an image file PIL can read; replace or delete it", path) from None
    except Exception as e:  # noqa: BLE001 - decoders raise OSError, SyntaxError, ValueError, EOFError, ...
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BadImageError(f"image {path} is damaged ({reason}); replace or delete it", path) from None
    return img


def _to_8bit(values: np.ndarray, full_scale: float) -> np.ndarray:
    """Map values in [0, full_scale] to 0..255, or the image's own range when they exceed it."""
    values = values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > full_scale:
        values = (values - low) / max(high - low, 1e-12) * full_scale
    return np.round(values * (255.0 / full_scale)).astype(np.uint8)


def _as_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB.

    Alpha is dropped, not composited: the colour under a transparent pixel is kept, as the
    official loader's `.convert("RGB")` does, so results stay comparable with it.
    """
    mode = img.mode
    if mode == "I" or mode.startswith("I;"):
        # 16-bit data (I;16*), or 32-bit integers, which is how older PIL held 16-bit PNGs.
        gray = Image.fromarray(_to_8bit(np.asarray(img), 65535.0))
    elif mode == "F":  # floating point: [0, 1] is the usual convention
        gray = Image.fromarray(_to_8bit(np.asarray(img), 1.0))
    elif mode in ("P", "PA"):
        # Via RGBA, so a palette's transparency entry is honoured rather than warned about.
        return img.convert("RGBA").convert("RGB")
    else:
        return img.convert("RGB")
    return gray.convert("RGB")


def load_image(path: Path, grayscale: bool = False) -> Image.Image:
    """The image at `path` as 8-bit RGB (or L when `grayscale`), whatever its mode on disk.

    16-bit images are scaled (65535 -> 255), not clipped; palette images are expanded; alpha is
    dropped. A missing, empty, truncated, oversized or non-image file raises BadImageError.
    """
    img = open_image(path)
    try:
        rgb = _as_rgb(img)
    except (OSError, ValueError) as e:  # a mode PIL cannot convert, e.g. an exotic TIFF
        raise BadImageError(f"image {path} has mode {img.mode}, which cannot be turned into RGB ({e}); "
                            f"save it as 8-bit RGB", path) from None
    return rgb.convert("L") if grayscale else rgb
