"""Two synthetic labelled worlds of cartoon faces, for multi-domain translation (StarGAN).

"faces" stands in for CelebA: a frontal face labelled with CelebA attributes (a one-hot hair
colour, Male, Young). "expressions" stands in for RaFD: the same kind of face labelled with one
expression out of several. Every face is drawn from its seed in about a millisecond, and each
world comes with an oracle: fixed pixel rules that read the labels back from an image, so a
translation can be scored by whether the asked-for attributes show.

Each attribute has its own visible cue, kept apart from the others so that changing one label
changes only its cue: hair colour is the colour of the hair above the forehead; a man has a
beard and short hair, a woman long hair falling beside the face; an old face has greyish skin
and wrinkles. Expressions are mouth and eyebrow shapes. Everything else (skin tone, background,
eye colour, face position and size, lighting, noise) varies as nuisance. The oracles assume the
face is roughly centred, which holds because the position jitter is small.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from translate.config import DataConfig
from translate.data.base import split_key
from translate.data.transforms import sample_params, transform_image
from translate.errors import UserError

FACE_ATTRIBUTES = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young")
HAIR_GROUP = ("Black_Hair", "Blond_Hair", "Brown_Hair")
EXPRESSIONS = ("neutral", "happy", "sad", "surprised")
NEUTRAL, HAPPY, SAD, SURPRISED = range(len(EXPRESSIONS))

# Hair colours (RGB, 0-255) in the order of HAIR_GROUP; the oracle picks the nearest.
HAIR_COLOURS = np.array([(38, 32, 30), (226, 192, 105), (122, 72, 38)], dtype=np.float32)
MOUTH = np.array((112, 26, 36), np.float32)
SCLERA = np.array((240, 238, 232), np.float32)
PUPIL = np.array((20, 18, 20), np.float32)
IRISES = np.array([(60, 110, 170), (70, 130, 80), (110, 70, 40), (120, 124, 130)], dtype=np.float32)

# The nominal face: an ellipse with this centre and these radii, in fractions of the image side.
# Drawing and oracle share "face coordinates" u = (x - cx) / rx, v = (y - cy) / ry, so the face
# is the unit disc; a face's own centre and radii are jittered by at most these amounts.
FACE_CENTRE = (0.5, 0.55)
FACE_RADII = (0.26, 0.32)
POSITION_JITTER = 0.025
SCALE_JITTER = 0.06

# Feature layout in face coordinates.
HAIRLINE = -0.58  # the front hair covers the face above this
MOUTH_CENTRE = 0.38
EYE_HEIGHT, EYE_SPREAD = -0.12, 0.38

# Skin: an orange hue of this saturation range; an old face keeps this share of it (greyish).
YOUNG_SATURATION = (0.28, 0.45)
OLD_SATURATION_SHARE = 0.25
OLD_SATURATION_LIMIT = 0.2  # the oracle's threshold between the two ranges, after noise and cast

# Oracle regions in face coordinates: (u_min, u_max, v_min, v_max). Each lies inside its feature
# for any jittered face, so a median over it reads the feature's colour.
HAIR_BOX = (-0.4, 0.4, -1.0, -0.74)
# Bare skin: down the middle, between the brows and eyes, above the mouth and moustache.
SKIN_BOXES = ((-0.18, 0.18, -0.45, 0.06),)
CHIN_BOX = (-0.3, 0.3, 0.68, 0.88)
BESIDE_FACE_BOXES = ((-1.38, -1.12, 0.2, 0.6), (1.12, 1.38, 0.2, 0.6))
# The background, in image fractions (not face coordinates): the top corners, clear of any hair.
BACKGROUND_BOXES = ((0.0, 0.1, 0.0, 0.08), (0.9, 1.0, 0.0, 0.08))
MOUTH_BOX = (-0.62, 0.62, 0.1, 0.85)
MOUTH_DISC = 0.85  # only the part of MOUTH_BOX this close to the centre is sure to be face
# Expression oracle thresholds on the mouth's shape, measured in face-height units.
OPEN_MOUTH_ASPECT = 0.8  # height / width above which a mouth is an "O"
SMILE_CURVATURE = 0.05  # how much lower the mouth's middle sits than its corners


def face_seed(world_seed: int, split: str, index: int) -> int:
    """The seed of face `index` of a split of world `world_seed`; each split name is its own
    stream of faces, so "train" and "test" never share one."""
    sequence = np.random.SeedSequence([world_seed, zlib.crc32(split.encode()), index])
    return int(sequence.generate_state(1, np.uint64)[0])


@dataclass(frozen=True)
class _Look:
    """What a face shows: its labelled features first, then the nuisance."""

    long_hair: bool
    beard: bool
    old: bool
    expression: int
    centre: tuple[float, float]
    radii: tuple[float, float]
    hair_colour: np.ndarray
    skin: np.ndarray
    background: tuple[np.ndarray, np.ndarray]  # (top, bottom) of a vertical gradient
    clothes: np.ndarray
    iris: np.ndarray
    mouth_width: float
    hair_phase: float
    exposure: np.ndarray


def render_face(seed: int, size: int, attributes: dict[str, bool] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One face of the "faces" world: (image uint8 HxWx3, labels float32 [len(FACE_ATTRIBUTES)]).

    The attributes are drawn from the seed; `attributes` overrides some or all of them and
    leaves the rest of the face as the seed has it, so the same face can be drawn with, say,
    blond hair instead of black. Setting a hair colour True picks it (at most one may be).
    """
    rng = np.random.default_rng(seed)
    labels = dict(zip(FACE_ATTRIBUTES, [False] * len(FACE_ATTRIBUTES)))
    labels[HAIR_GROUP[rng.integers(len(HAIR_GROUP))]] = True
    labels["Male"] = bool(rng.random() < 0.5)
    labels["Young"] = bool(rng.random() < 0.5)
    labels.update(_checked_overrides(attributes or {}))
    # The mouth is a nuisance here, but never the open "O", which would reach into the beard.
    expression = int(rng.integers(SURPRISED))
    hair = next(i for i, name in enumerate(HAIR_GROUP) if labels[name])
    look = _random_look(rng, hair, long_hair=not labels["Male"], beard=labels["Male"],
                        old=not labels["Young"], expression=expression)
    image = _draw(look, size, rng)
    return image, np.array([labels[name] for name in FACE_ATTRIBUTES], dtype=np.float32)


def render_expression(seed: int, size: int, expression: int | None = None) -> tuple[np.ndarray, int]:
    """One face of the "expressions" world: (image uint8 HxWx3, index into EXPRESSIONS).

    Hair colour and length and age vary unlabelled; there are no beards, which would hide the
    mouth. `expression` overrides the one drawn from the seed, leaving the rest of the face.
    """
    rng = np.random.default_rng(seed)
    drawn = int(rng.integers(len(EXPRESSIONS)))
    if expression is None:
        expression = drawn
    elif not 0 <= expression < len(EXPRESSIONS):
        raise ValueError(f"expression {expression} is not an index into {EXPRESSIONS}")
    hair = int(rng.integers(len(HAIR_GROUP)))
    long_hair, old = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
    look = _random_look(rng, hair, long_hair=long_hair, beard=False, old=old, expression=expression)
    return _draw(look, size, rng), expression


def _checked_overrides(attributes: dict[str, bool]) -> dict[str, bool]:
    """The attribute values to set, with the hair group kept one-hot."""
    unknown = sorted(set(attributes) - set(FACE_ATTRIBUTES))
    if unknown:
        raise ValueError(f"unknown face attributes {unknown}; valid: {', '.join(FACE_ATTRIBUTES)}")
    chosen = [name for name in HAIR_GROUP if attributes.get(name)]
    if len(chosen) > 1:
        raise ValueError(f"a face has one hair colour, got {chosen}")
    overrides = {name: bool(value) for name, value in attributes.items() if name not in HAIR_GROUP}
    if chosen:
        overrides.update({name: name == chosen[0] for name in HAIR_GROUP})
    elif all(name in attributes for name in HAIR_GROUP):
        raise ValueError(f"a face needs one hair colour of {', '.join(HAIR_GROUP)}, all were False")
    return overrides


# ---------------------------------------------------------------------------------------------
# Oracles: fixed pixel rules that read the labels back. They work on Bx3xHxW images in [-1, 1]
# at any size, using medians over regions, so that a roughly right image reads right.


def face_oracle(images: torch.Tensor) -> torch.Tensor:
    """The attributes an image shows, as B x len(FACE_ATTRIBUTES) float 0/1 (hair one-hot)."""
    rgb = _as_rgb(images)
    hair = _median_colour(rgb, (HAIR_BOX,))
    skin = _median_colour(rgb, SKIN_BOXES)
    prototypes = torch.from_numpy(HAIR_COLOURS).to(rgb.device)
    hair_colour = torch.cdist(hair, prototypes).argmin(dim=1)
    # Male: a beard (chin in the hair's colour, not the skin's) and no hair beside the face.
    beard = _nearer(_median_colour(rgb, (CHIN_BOX,)), hair, skin)
    background = _median_colour(rgb, BACKGROUND_BOXES, in_face_units=False)
    long_hair = _nearer(_median_colour(rgb, BESIDE_FACE_BOXES), hair, background)
    male = beard - long_hair > 0
    young = _saturation(skin) > OLD_SATURATION_LIMIT
    hair_one_hot = torch.nn.functional.one_hot(hair_colour, len(HAIR_GROUP)).bool()
    return torch.cat([hair_one_hot, male[:, None], young[:, None]], dim=1).float()


def expression_oracle(images: torch.Tensor) -> torch.Tensor:
    """The expression an image shows, as B int64 indices into EXPRESSIONS, from the mouth's
    shape: tall for surprised, curved down in the middle (a smile) for happy, up for sad."""
    rgb = _as_rgb(images)
    height = images.shape[-2]
    luma = _luma(_crop(rgb, MOUTH_BOX))  # B x h x w
    h, w = luma.shape[-2:]
    rows = torch.arange(h, dtype=torch.float32, device=rgb.device)
    cols = torch.arange(w, dtype=torch.float32, device=rgb.device)
    u = MOUTH_BOX[0] + (cols + 0.5) / w * (MOUTH_BOX[1] - MOUTH_BOX[0])
    v = MOUTH_BOX[2] + (rows + 0.5) / h * (MOUTH_BOX[3] - MOUTH_BOX[2])
    inside = (u[None, :] ** 2 + v[:, None] ** 2) < MOUTH_DISC ** 2
    # Dark = nearer the darkest pixel than the skin: the mouth, whatever the image's contrast.
    skin = _luma(_median_colour(rgb, SKIN_BOXES))
    darkest = torch.where(inside, luma, torch.full_like(luma, 255.0)).flatten(1).amin(dim=1)
    dark = (luma < ((skin + darkest) / 2)[:, None, None]) & inside
    weight = dark.float()

    # The mouth's columns, its middle third and its outer thirds.
    in_mouth = weight.sum(dim=1) > 0  # B x w
    left = torch.where(in_mouth, cols, torch.full_like(cols, float(w))).amin(dim=1)
    right = torch.where(in_mouth, cols, torch.full_like(cols, -1.0)).amax(dim=1)
    width = (right - left + 1).clamp(min=1)
    offset = (cols[None, :] - ((left + right) / 2)[:, None]).abs()
    middle = (offset <= width[:, None] / 6).float()
    outer = (offset > width[:, None] / 6).float()

    def mean_row(columns: torch.Tensor) -> torch.Tensor:
        mass = weight * columns[:, None, :]
        return (mass * rows[None, :, None]).sum(dim=(1, 2)) / mass.sum(dim=(1, 2)).clamp(min=1e-6)

    face_height = FACE_RADII[1] * height  # pixels per face-coordinate unit of v
    curvature = (mean_row(middle) - mean_row(outer)) / face_height
    tallest = weight.sum(dim=1).amax(dim=1)
    # Width in the same pixels as height: rows and columns of the box are the image's own.
    aspect = tallest / width
    expression = torch.full_like(aspect, NEUTRAL, dtype=torch.int64)
    expression[curvature > SMILE_CURVATURE] = HAPPY
    expression[curvature < -SMILE_CURVATURE] = SAD
    expression[aspect > OPEN_MOUTH_ASPECT] = SURPRISED
    return expression


def _as_rgb(images: torch.Tensor) -> torch.Tensor:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected Bx3xHxW RGB images, got shape {tuple(images.shape)}")
    return (images.detach().float().clamp(-1, 1) + 1) * 127.5


def _crop(rgb: torch.Tensor, box: tuple[float, float, float, float], in_face_units: bool = True) -> torch.Tensor:
    """The pixels of a box of the nominal face (or, with in_face_units=False, of the image)."""
    height, width = rgb.shape[-2:]
    u0, u1, v0, v1 = box
    if in_face_units:
        (cx, cy), (rx, ry) = FACE_CENTRE, FACE_RADII
        u0, u1, v0, v1 = cx + u0 * rx, cx + u1 * rx, cy + v0 * ry, cy + v1 * ry
    top, left = round(v0 * height), round(u0 * width)
    bottom, right = max(round(v1 * height), top + 1), max(round(u1 * width), left + 1)
    return rgb[:, :, top:bottom, left:right]


def _median_colour(rgb: torch.Tensor, boxes: tuple[tuple[float, float, float, float], ...],
                   in_face_units: bool = True) -> torch.Tensor:
    """B x 3: the per-channel median over the union of boxes."""
    pixels = torch.cat([_crop(rgb, box, in_face_units).flatten(2) for box in boxes], dim=2)
    return pixels.median(dim=2).values


def _saturation(colour: torch.Tensor) -> torch.Tensor:
    """B x 3 -> B: HSV saturation. Taken of a median colour, as pixel noise adds saturation."""
    high, low = colour.amax(dim=1), colour.amin(dim=1)
    return (high - low) / high.clamp(min=1.0)


def _luma(rgb: torch.Tensor) -> torch.Tensor:
    """Bx3x... -> Bx...: Rec. 601 brightness."""
    return 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]


def _nearer(colour: torch.Tensor, this: torch.Tensor, that: torch.Tensor) -> torch.Tensor:
    """B, in [-1, 1]: 1 when `colour` is `this` colour, -1 when it is `that`."""
    to_this, to_that = (colour - this).norm(dim=1), (colour - that).norm(dim=1)
    return (to_that - to_this) / (to_that + to_this).clamp(min=1e-6)


# ---------------------------------------------------------------------------------------------
# Datasets


class FacesDataset(Dataset):
    """The "faces" world: image and CelebA-style attribute labels, in the chosen order."""

    def __init__(self, cfg: DataConfig, split: str, train: bool, attributes: list[str]):
        unknown = [name for name in attributes if name not in FACE_ATTRIBUTES]
        if unknown or not attributes:
            raise UserError(f"data.attributes={','.join(attributes)} has unknown or no attribute names; "
                            f"choose from {', '.join(FACE_ATTRIBUTES)}")
        self.cfg = cfg
        self.split = split
        self.train = train
        self.columns = [FACE_ATTRIBUTES.index(name) for name in attributes]

    def __len__(self) -> int:
        return self.cfg.scenes_count

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = _checked_key(key, len(self))
        image, labels = render_face(face_seed(self.cfg.scenes_seed, self.split, index), self.cfg.scenes_size)
        return {"image": _augmented(self.cfg, image, seed, self.train),
                "label": torch.from_numpy(labels[self.columns]),
                "path": f"faces/{self.split}/{index}"}


class ExpressionsDataset(Dataset):
    """The "expressions" world: image and a one-hot label over EXPRESSIONS."""

    def __init__(self, cfg: DataConfig, split: str, train: bool):
        self.cfg = cfg
        self.split = split
        self.train = train

    def __len__(self) -> int:
        return self.cfg.scenes_count

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = _checked_key(key, len(self))
        # A stream of seeds of its own, so that this world's faces are not the faces world's.
        face = face_seed(self.cfg.scenes_seed, f"expressions/{self.split}", index)
        image, expression = render_expression(face, self.cfg.scenes_size)
        label = torch.zeros(len(EXPRESSIONS), dtype=torch.float32)
        label[expression] = 1
        return {"image": _augmented(self.cfg, image, seed, self.train),
                "label": label,
                "path": f"expressions/{self.split}/{index}"}


def _checked_key(key: int | tuple[int, int], length: int) -> tuple[int, int]:
    index, seed = split_key(key)
    if not 0 <= index < length:
        raise IndexError(f"index {index} is outside a dataset of {length} faces")
    return index, seed


def _augmented(cfg: DataConfig, image: np.ndarray, seed: int, train: bool) -> torch.Tensor:
    """The configured resize, crop and flip (all labels are left-right symmetric), as a tensor."""
    rng = random.Random(seed)
    params = sample_params(cfg, (cfg.scenes_size, cfg.scenes_size), rng, train)
    return transform_image(Image.fromarray(image), params, cfg.grayscale)


# ---------------------------------------------------------------------------------------------
# Drawing. The random draws happen in a fixed order whatever the labels, so that a face drawn
# again with one label changed keeps all its nuisance.


def _random_look(rng: np.random.Generator, hair: int, long_hair: bool, beard: bool, old: bool,
                 expression: int) -> _Look:
    centre = tuple(c + rng.uniform(-POSITION_JITTER, POSITION_JITTER) for c in FACE_CENTRE)
    scale = 1 + rng.uniform(-SCALE_JITTER, SCALE_JITTER)
    radii = (FACE_RADII[0] * scale * rng.uniform(0.97, 1.03), FACE_RADII[1] * scale)
    hair_colour = HAIR_COLOURS[hair] + rng.uniform(-12, 12, 3).astype(np.float32)
    # Skin: an orange hue at a saturation kept in a band, so age (greyness) stays readable
    # whatever the tone; an old face keeps a quarter of it.
    hue = rng.uniform(16, 32) / 60
    saturation = rng.uniform(*YOUNG_SATURATION) * (OLD_SATURATION_SHARE if old else 1.0)
    value = rng.uniform(180, 250)
    skin = np.array([value, value * (1 - saturation * (1 - hue)), value * (1 - saturation)], np.float32)
    # Backgrounds stay light (every channel >= 150), so nothing there passes for a mouth.
    top = rng.uniform(150, 245, 3).astype(np.float32)
    background = (top, np.clip(top + rng.uniform(-25, 25, 3), 150, 245).astype(np.float32))
    clothes = rng.uniform(30, 220, 3).astype(np.float32)
    iris = IRISES[rng.integers(len(IRISES))]
    mouth_width = rng.uniform(0.42, 0.5)
    hair_phase = rng.uniform(0, 2 * np.pi)
    exposure = (rng.uniform(0.9, 1.08) * (1 + rng.uniform(-0.025, 0.025, 3))).astype(np.float32)
    return _Look(long_hair, beard, old, expression, centre, radii, hair_colour, skin, background,
                 clothes, iris, mouth_width, hair_phase, exposure)


def _draw(look: _Look, size: int, rng: np.random.Generator) -> np.ndarray:
    """Paint a face back to front: background, long hair, clothes, face, beard, front hair,
    eyes, brows, mouth, wrinkles; then lighting and noise."""
    grain = rng.standard_normal((size, size, 1)).astype(np.float32)
    centres = (np.arange(size, dtype=np.float32) + 0.5) / size
    x, y = centres[None, :], centres[:, None]
    (cx, cy), (rx, ry) = look.centre, look.radii
    u, v = (x - cx) / rx, (y - cy) / ry
    pixel_v = 1 / (size * ry)  # one pixel in face-height units, so thin lines never vanish
    image = np.empty((size, size, 3), np.float32)

    def paint(mask: np.ndarray, colour: np.ndarray) -> None:
        mask = np.broadcast_to(mask, (size, size))
        image[mask] = np.broadcast_to(colour, image.shape)[mask]

    top, bottom = look.background
    image[:] = top + (bottom - top) * y[..., None]
    # Hair: strands (a ripple across) and a sheen on the crown.
    strands = 1 + 0.07 * np.sin(u * 9 + look.hair_phase)[..., None]
    sheen = 1 + 0.1 * np.exp(-((u / 0.5) ** 2 + ((v + 0.95) / 0.15) ** 2))[..., None]
    hair = look.hair_colour * strands * sheen
    if look.long_hair:
        rounded_top = (u / 1.55) ** 2 + ((v + 0.05) / 1.3) ** 2 < 1
        paint((np.abs(u) < 1.55) & (v < 0.95) & (rounded_top | (v > -0.05)), hair)
    paint((np.abs(u) < 0.45) & (v > 0.6), look.skin * 0.85)  # neck, in the face's shadow
    paint((u / 2.2) ** 2 + (v - 2.0) ** 2 < 1, look.clothes * (1 + 0.05 * grain))
    face = u ** 2 + v ** 2 < 1
    shading = 1 - 0.1 * np.clip(u ** 2 + v ** 2, 0, 1)[..., None]  # a little roundness
    paint(face, look.skin * shading)
    if look.beard:
        around_mouth = (np.abs(u) < 0.55) & (v > MOUTH_CENTRE - 0.16) & (v < MOUTH_CENTRE + 0.22)
        moustache = (np.abs(u) < 0.5) & (v > MOUTH_CENTRE - 0.24) & (v < MOUTH_CENTRE - 0.08)
        jaw = (v > 0.2) & ((np.abs(u) > 0.62) | ~around_mouth)
        paint(face & (jaw | moustache), look.hair_colour * 0.88 * (1 + 0.06 * grain))
    front_hair = ((u / 1.14) ** 2 + (v / 1.2) ** 2 < 1) & (v < HAIRLINE + 0.04 * np.sin(u * 7 + look.hair_phase))
    paint(front_hair, hair)
    _draw_eyes(look, u, v, paint)
    _draw_brows(look, u, v, pixel_v, paint)
    _draw_mouth(look, u, v, pixel_v, paint)
    if look.old:
        _draw_wrinkles(look, u, v, pixel_v, face, image, paint)
    image = image * look.exposure + 4 * grain
    return np.clip(image, 0, 255).astype(np.uint8)


def _draw_eyes(look: _Look, u, v, paint) -> None:
    for side in (-1, 1):
        du, dv = u - side * EYE_SPREAD, v - EYE_HEIGHT
        paint((du / 0.17) ** 2 + (dv / 0.1) ** 2 < 1, SCLERA)
        paint((du / 0.08) ** 2 + (dv / 0.09) ** 2 < 1, look.iris)
        paint((du / 0.035) ** 2 + (dv / 0.04) ** 2 < 1, PUPIL)


def _draw_brows(look: _Look, u, v, pixel_v: float, paint) -> None:
    """Brows in a darker shade of the hair: raised for surprise, slanted up inwards for sadness."""
    across = np.abs(u) - EYE_SPREAD  # from each brow's middle, outwards positive
    height = {NEUTRAL: np.full_like(across, -0.34),
              HAPPY: -0.36 + 0.1 * (across / 0.18) ** 2,
              SAD: -0.34 + 0.25 * across,
              SURPRISED: -0.48 + 0.1 * (across / 0.18) ** 2}[look.expression]
    half_thickness = max(0.05, 0.6 * pixel_v)
    paint((np.abs(across) < 0.18) & (np.abs(v - height) < half_thickness), look.hair_colour * 0.75)


def _draw_mouth(look: _Look, u, v, pixel_v: float, paint) -> None:
    """A dark mouth: a line, a smiling crescent, a frowning arc or an open "O"."""
    a, centre = look.mouth_width, MOUTH_CENTRE
    across = (u / a) ** 2
    half_thickness = max(0.06, 0.6 * pixel_v)
    if look.expression == NEUTRAL:
        mouth = (np.abs(u) < 0.85 * a) & (np.abs(v - centre - 0.05) < half_thickness)
    elif look.expression == HAPPY:
        upper, lower = centre - 0.38 * across, centre + 0.2 - 0.45 * across
        mouth = (np.abs(u) < a) & (v > upper - half_thickness) & (v < lower + half_thickness)
    elif look.expression == SAD:
        mouth = (np.abs(u) < a) & (np.abs(v - (centre - 0.04 + 0.4 * across)) < half_thickness * 1.3)
    else:
        mouth = (u / 0.2) ** 2 + ((v - centre - 0.05) / 0.27) ** 2 < 1
    paint(mouth, MOUTH)


def _draw_wrinkles(look: _Look, u, v, pixel_v: float, face, image: np.ndarray, paint) -> None:
    """Darker lines of skin: across the forehead, under the eyes, and from nose to mouth."""
    half_thickness = max(0.03, 0.45 * pixel_v)
    forehead = (np.abs(u) < 0.45) & (np.abs(v - (HAIRLINE + 0.12) - 0.06 * u ** 2) < half_thickness)
    under_eyes = (np.abs(np.abs(u) - EYE_SPREAD) < 0.15) & (np.abs(v - EYE_HEIGHT - 0.17) < half_thickness)
    slope = (np.abs(u) - 0.28) / 0.22  # from beside the nose (0) out to the mouth's corner (1)
    nose_to_mouth = (slope > 0) & (slope < 1) & (np.abs(v - (0.05 + 0.4 * slope)) < 1.5 * half_thickness)
    lines = face & (forehead | under_eyes | nose_to_mouth)
    paint(lines, image * 0.78)
