"""The synthetic "scenes" world: street label maps and photo-like renderings of them.

A tiny stand-in for Cityscapes that needs no download. Every scene is drawn from its seed in
a few milliseconds, so a CPU can train photo <-> label translation on it, and the exact class
map of every scene is kept to score the result.

The photos are rendered in colours of their own, away from the label palette of the same class
(sky is not steel blue, buildings are not dark grey), so copying the input scores badly and a
model has to learn the mapping.
"""

from __future__ import annotations

import random
import zlib
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from translate.config import DataConfig
from translate.data.base import split_key, swap_sides
from translate.data.transforms import sample_params, to_tensor, transform_classes, transform_image

SCENE_CLASSES = ("road", "sidewalk", "building", "vegetation", "sky", "car")
ROAD, SIDEWALK, BUILDING, VEGETATION, SKY, CAR = range(len(SCENE_CLASSES))
# The official Cityscapes colours of these classes, in the same order.
SCENE_PALETTE = np.array(
    [(128, 64, 128), (244, 35, 232), (70, 70, 70), (107, 142, 35), (70, 130, 180), (0, 0, 142)],
    dtype=np.uint8,
)
SCENE_PALETTE.flags.writeable = False

# Photo colours (RGB, 0-255), each jittered per scene or per object.
SKIES = np.array([  # (zenith, horizon): clear, hazy, overcast, evening
    [(112, 160, 216), (206, 221, 236)],
    [(178, 192, 212), (232, 230, 226)],
    [(196, 198, 204), (228, 228, 229)],
    [(128, 140, 186), (242, 206, 172)],
], dtype=np.float32)
CLOUD = np.array((238, 238, 242), np.float32)
FACADES = np.array([
    (226, 211, 178), (165, 84, 62), (192, 152, 112), (208, 164, 96),
    (214, 182, 170), (176, 174, 166), (146, 110, 86), (232, 226, 214),
], dtype=np.float32)
GLASS = np.array((48, 58, 74), np.float32)
FOLIAGE = np.array((46, 84, 36), np.float32)
BARK = np.array((86, 62, 44), np.float32)
ASPHALT = np.array((82, 82, 84), np.float32)
PAVING = np.array((172, 166, 156), np.float32)
LANE_PAINT = np.array([(224, 224, 216), (226, 190, 64)], dtype=np.float32)
CAR_BODIES = np.array([
    (172, 30, 36), (218, 218, 220), (160, 164, 170), (34, 35, 40),
    (38, 64, 140), (222, 180, 42), (30, 84, 54), (120, 40, 20),
], dtype=np.float32)
TYRE = np.array((22, 22, 24), np.float32)
TAIL_LIGHT = np.array((210, 24, 20), np.float32)


def render_scene(seed: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One street scene: (photo uint8 HxWx3, label map uint8 HxWx3, classes uint8 HxW)."""
    rng = np.random.default_rng(seed)
    canvas = _Canvas.blank(size, rng)
    street = _Street(rng, canvas)
    haze = _draw_sky_and_ground(canvas, rng, street)
    _draw_buildings(canvas, rng, street)
    _draw_street(rng, street)
    _draw_trees(canvas, rng, street)
    _draw_cars(canvas, rng, street)
    photo = _develop(canvas, rng, street, haze)
    return photo, SCENE_PALETTE[canvas.classes], canvas.classes


def colors_to_classes(images: torch.Tensor) -> torch.Tensor:
    """The class whose palette colour is nearest to each pixel of 3xHxW or Bx3xHxW images in
    [-1, 1], as int64 HxW or BxHxW: for scoring generated label maps."""
    if images.dim() not in (3, 4) or images.shape[-3] != 3:
        raise ValueError(f"expected 3xHxW or Bx3xHxW RGB images, got shape {tuple(images.shape)}")
    rgb = (images.float().clamp(-1, 1) + 1) * 127.5
    palette = torch.tensor(SCENE_PALETTE.tolist(), dtype=torch.float32, device=images.device)
    # One map of squared distances per class, stacked where the channels were.
    distances = torch.stack([((rgb - colour.view(3, 1, 1)) ** 2).sum(dim=-3) for colour in palette], dim=-3)
    return distances.argmin(dim=-3)


def scene_seed(world: int, split: str, index: int) -> int:
    """The seed of scene `index` of a split of world `world`; each split name is its own stream
    of scenes, so "train" and "test" never share one."""
    sequence = np.random.SeedSequence([world, zlib.crc32(split.encode()), index])
    return int(sequence.generate_state(1, np.uint64)[0])


class ScenesDataset(Dataset):
    """A = the photo of a scene, B = its label map in SCENE_PALETTE; A_classes/B_classes = class ids.

    Paired: photo and label map of one scene, with the same crop and flip. Unpaired (CycleGAN):
    in training B is another scene, drawn from the sample's seed, with its own crop and flip; in
    evaluation B is the photo's own scene, as in the file formats. Label maps are resized as
    class ids (nearest) and coloured afterwards, so B only ever holds exact palette colours.
    """

    def __init__(self, cfg: DataConfig, split: str, paired: bool, train: bool):
        self.cfg = cfg
        self.split = split
        self.paired = paired
        self.train = train

    def __len__(self) -> int:
        return self.cfg.scenes_count

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = split_key(key)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is outside a dataset of {len(self)} scenes")
        rng = random.Random(seed)
        size = (self.cfg.scenes_size, self.cfg.scenes_size)
        label_index = index
        if not self.paired and self.train and len(self) > 1:
            # Any scene but the photo's own, so that no training pair ever matches.
            label_index = (index + 1 + rng.randrange(len(self) - 1)) % len(self)
        photo_params = sample_params(self.cfg, size, rng, self.train)
        label_params = photo_params if self.paired else sample_params(self.cfg, size, rng, self.train)

        photo, _, photo_classes = self._render(index)
        label_classes = photo_classes if label_index == index else self._render(label_index)[2]
        b_classes = transform_classes(label_classes, label_params)
        label = Image.fromarray(SCENE_PALETTE[b_classes.numpy()])
        sample = {
            "A": transform_image(Image.fromarray(photo), photo_params, self.cfg.grayscale),
            "B": to_tensor(label, self.cfg.grayscale),
            "A_path": f"scenes/{self.split}/{index}",
            "B_path": f"scenes/{self.split}/{label_index}",
            "A_classes": transform_classes(photo_classes, photo_params),
            "B_classes": b_classes,
            "skipped": "",
        }
        return swap_sides(sample) if self.cfg.direction == "BtoA" else sample

    def _render(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return render_scene(scene_seed(self.cfg.scenes_seed, self.split, index), self.cfg.scenes_size)


# ---------------------------------------------------------------------------------------------
# Drawing. Coordinates are fractions of the image side, so a layout looks the same at any size.


class _Canvas:
    """The class map and the photo being drawn, painted back to front.

    `crop` gives a window onto the same pixels, so that an object is drawn with array
    operations over its bounding box only (most of the render time otherwise).
    """

    def __init__(self, size: int, origin: tuple[int, int], x: np.ndarray, y: np.ndarray,
                 classes: np.ndarray, photo: np.ndarray, grain: np.ndarray, blotches: np.ndarray):
        self.size = size  # of the whole image, for lengths in pixels
        self.pixel = 1.0 / size
        self.origin = origin  # (row, column) of this window's top-left pixel in the image
        self.x = x  # 1xW: pixel centres, 0 at the image's left edge, 1 at its right
        self.y = y  # Hx1: 0 at the top, 1 at the bottom
        self.classes = classes
        self.photo = photo  # float RGB, 0-255
        self.grain = grain  # HxWx1 per-pixel noise, like a sensor's
        self.blotches = blotches  # HxWx1 noise a few pixels across, for mottled leaves

    @classmethod
    def blank(cls, size: int, rng: np.random.Generator) -> _Canvas:
        centres = (np.arange(size, dtype=np.float32) + 0.5) / size
        grain = rng.standard_normal((size, size, 1)).astype(np.float32)
        blotches = _smooth_noise(rng, size, max(2, size // 5))
        return cls(size, (0, 0), centres[None, :], centres[:, None], np.full((size, size), SKY, np.uint8),
                   np.zeros((size, size, 3), np.float32), grain, blotches)

    def crop(self, left: float, top: float, right: float, bottom: float) -> _Canvas:
        """The part of this window inside a box given in fractions of the image side."""
        height, width = self.classes.shape

        def index(fraction: float, origin: int, extent: int) -> int:
            return min(max(round(fraction * self.size) - origin, 0), extent)

        rows = slice(index(top, self.origin[0], height), index(bottom, self.origin[0], height))
        cols = slice(index(left, self.origin[1], width), index(right, self.origin[1], width))
        return _Canvas(self.size, (self.origin[0] + rows.start, self.origin[1] + cols.start),
                       self.x[:, cols], self.y[rows], self.classes[rows, cols],
                       self.photo[rows, cols], self.grain[rows, cols], self.blotches[rows, cols])

    def paint(self, mask: np.ndarray, cls: int, colour: np.ndarray) -> None:
        """Give the pixels of `mask` class `cls` and colour `colour` (any shape that broadcasts)."""
        mask = np.broadcast_to(mask, self.classes.shape)
        self.classes[mask] = cls
        self.photo[mask] = np.broadcast_to(colour, self.photo.shape)[mask]

    def fill(self, cls: int, colour: np.ndarray) -> None:
        """Paint the whole window."""
        self.classes[:] = cls
        self.photo[:] = colour


class _Street:
    """The road's perspective: a strip from the bottom edge narrowing to a vanishing point.

    `ground` is the canvas below the horizon. Over it, `depth` runs from 0 at the horizon to 1
    at the bottom edge, and `across` is the signed distance from the road's centre line in road
    half-widths, so |across| < 1 is road.
    """

    def __init__(self, rng: np.random.Generator, canvas: _Canvas):
        self.horizon = rng.uniform(0.36, 0.5)
        self.vanish_x = rng.uniform(0.3, 0.7)
        self.bottom_x = self.vanish_x + rng.uniform(-0.2, 0.2)
        self.bend = rng.uniform(-0.35, 0.35)  # a curve shifts the middle distance sideways
        self.far_half_width = rng.uniform(0.01, 0.03)
        self.near_half_width = rng.uniform(0.32, 0.55)
        # Sidewalk widths in road half-widths; a side sometimes has none.
        self.walks = [rng.uniform(0.2, 0.45) if rng.random() < 0.85 else 0.0 for _ in range(2)]
        self.ground = canvas.crop(0, self.horizon, 1, 1)
        self.depth = np.clip((self.ground.y - self.horizon) / (1 - self.horizon), 0, 1)
        self.across = (self.ground.x - self.centre(self.depth)) / self.half_width(self.depth)

    def centre(self, depth):
        return (self.vanish_x + (self.bottom_x - self.vanish_x) * depth
                + self.bend * depth * (1 - depth))

    def half_width(self, depth):
        return self.far_half_width + (self.near_half_width - self.far_half_width) * depth

    def height_at(self, depth: float) -> float:
        """The image row (as a fraction) where the ground is `depth` away."""
        return self.horizon + depth * (1 - self.horizon)

    def kerb_x(self, side: int, depth: float) -> float:
        """Where the sidewalk (or road, if none) ends on a side (-1 left, +1 right)."""
        walk = self.walks[(side + 1) // 2]
        return self.centre(depth) + side * self.half_width(depth) * (1 + walk)


def _jitter(rng: np.random.Generator, colour: np.ndarray, amount: float) -> np.ndarray:
    return colour + rng.uniform(-amount, amount, 3).astype(np.float32)


def _pick(rng: np.random.Generator, colours: np.ndarray) -> np.ndarray:
    return colours[rng.integers(len(colours))]


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Value noise (HxWx1, about unit variance): a random grid of cells+1 points a side,
    bilinearly upsampled, for blotches larger than a pixel (clouds, mottled leaves, patched tar)."""
    grid = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    position = np.linspace(0, cells, size, dtype=np.float32)
    low = np.minimum(position.astype(np.int64), cells - 1)
    frac = position - low
    rows = grid[low] * (1 - frac)[:, None] + grid[low + 1] * frac[:, None]
    return (rows[:, low] * (1 - frac) + rows[:, low + 1] * frac)[..., None]


def _draw_sky_and_ground(c: _Canvas, rng: np.random.Generator, street: _Street) -> np.ndarray:
    """Paint the sky and the lawn beneath it; return the sky's colour at the horizon."""
    zenith, horizon = (_jitter(rng, colour, 12) for colour in _pick(rng, SKIES))
    sky = c.crop(0, 0, 1, street.horizon)
    blend = ((sky.y / street.horizon) ** 0.8)[..., None]
    gradient = zenith + (horizon - zenith) * blend
    clouds = np.clip(_smooth_noise(rng, c.size, 3)[: len(sky.y)] * 0.7 + rng.uniform(-0.8, 0.2), 0, 1)
    sky.fill(SKY, gradient + (CLOUD - gradient) * clouds * 0.85)
    # Lawns and hedges fill the ground between buildings and road.
    ground = street.ground
    ground.fill(VEGETATION, _jitter(rng, FOLIAGE * 1.1, 10) * (1 + 0.1 * ground.blotches) + 6 * ground.grain)
    return horizon


def _draw_buildings(c: _Canvas, rng: np.random.Generator, street: _Street) -> None:
    """A row of facades along the street, taller the nearer they stand to the camera.

    Facades side by side never overlap, so every image column belongs to at most one of them:
    the whole row is drawn in one pass from per-column properties.
    """
    edges, tops = [rng.uniform(-0.1, 0.0)], []
    while edges[-1] < 1:
        width = rng.uniform(0.1, 0.32)
        if rng.random() < 0.2:  # a gap, below the image, shows sky above the lawn
            tops.append(2.0)
            edges.append(edges[-1] + width * 0.5)
            continue
        nearness = abs(edges[-1] + width / 2 - street.vanish_x)
        height = rng.uniform(0.15, 0.32) * (0.6 + 2.2 * nearness)
        tops.append(max(street.horizon - height, rng.uniform(0.0, 0.06)))
        edges.append(edges[-1] + width)
    count = len(tops)
    tops = np.array(tops)
    colours = FACADES[rng.integers(len(FACADES), size=count)] + rng.uniform(-14, 14, (count, 3))
    # Windows on an integer pixel grid, so they stay crisp rectangles at 32 px as at 256 px:
    # a pane of glass_x by glass_y pixels centred in every period_x by period_y cell.
    period_x = np.maximum(3, np.round(rng.uniform(0.05, 0.1, count) * c.size)).astype(int)
    period_y = np.maximum(3, np.round(rng.uniform(0.06, 0.11, count) * c.size)).astype(int)
    glass_x = np.clip(np.round(period_x * rng.uniform(0.35, 0.7, count)), 1, period_x - 1).astype(int)
    glass_y = np.clip(np.round(period_y * rng.uniform(0.35, 0.65, count)), 1, period_y - 1).astype(int)
    sheen = rng.uniform(0, 6, count)

    # Per column: which building, and where its grid of windows starts and ends.
    first_col = np.searchsorted(c.x[0], edges)
    first_row = np.searchsorted(c.y[:, 0], tops)
    building = np.searchsorted(edges, c.x[0], side="right") - 1
    usable = np.diff(first_col) - 2  # a pixel of wall at either side
    grid_left = first_col[:-1] + 1 + (usable % period_x) // 2
    grid_width = (usable // period_x) * period_x
    px, py, b = period_x[building], period_y[building], building
    col_in = np.arange(c.size) - grid_left[b]
    within_x = col_in % px - (px - glass_x[b]) // 2
    glass_cols = (col_in >= 0) & (col_in < grid_width[b]) & (within_x >= 0) & (within_x < glass_x[b])
    # A cornice darkens the roof line; windows start a pixel below it.
    cornice_rows = max(1, round(0.02 * c.size))
    row = np.arange(c.size)[:, None] - first_row[b]
    row_in = row - cornice_rows - 1
    within_y = row_in % py - (py - glass_y[b]) // 2
    windows = glass_cols & (row_in >= 0) & (within_y >= 0) & (within_y < glass_y[b])

    # Lower storeys lie in the street's shade.
    shade = (1.05 - 0.3 * (c.y - tops[b])) * np.where(row < cornice_rows, 0.72, 1.0)
    colour = colours[b] * shade[..., None] + 5 * c.grain
    # Each pane reflects a little differently.
    pane = np.sin((col_in // px) * 12.9898 + (row_in // py) * 78.233 + sheen[b]) * 43758.5
    reflection = (0.75 + 0.6 * (pane - np.floor(pane)))[..., None]
    colour = np.where(windows[..., None], GLASS * reflection + 4 * c.grain, colour)
    c.paint(row >= 0, BUILDING, colour)


def _draw_street(rng: np.random.Generator, street: _Street) -> None:
    ground, depth, across = street.ground, street.depth, street.across
    # Painted lines repeat evenly along the road, so their image spacing shrinks with distance.
    distance = 1 / (depth + 0.06)
    tar = _jitter(rng, ASPHALT, 10) * (1 + 0.08 * ground.blotches)
    asphalt = tar + 7 * ground.grain
    # The centre dashes are kept at least a pixel wide; the thinner edge lines may break up into
    # dots in the distance, as they do in a low-resolution photo.
    dash_width = np.maximum(0.04, 0.6 * ground.pixel / street.half_width(depth))
    dashes = (np.abs(across) < dash_width) & ((distance * 1.6) % 1 < 0.5)
    edges = np.abs(np.abs(across) - 0.9) < 0.025
    asphalt = np.where((dashes | edges)[..., None], _pick(rng, LANE_PAINT) + 5 * ground.grain, asphalt)
    ground.paint(np.abs(across) < 1, ROAD, asphalt)

    paving = _jitter(rng, PAVING, 12) + 6 * ground.grain
    seams = ((distance * 4) % 1 < 0.14) | ((np.abs(across) * 6) % 1 < 0.12)
    kerb = np.abs(across) < 1 + np.maximum(0.05, ground.pixel / street.half_width(depth))
    paving = paving * np.where(seams, 0.85, 1.0)[..., None] * np.where(kerb, 1.12, 1.0)[..., None]
    for side, walk in zip((-1, 1), street.walks):
        on_side = side * across
        ground.paint((on_side >= 1) & (on_side < 1 + walk), SIDEWALK, paving)


def _draw_trees(c: _Canvas, rng: np.random.Generator, street: _Street) -> None:
    """Trees and bushes at the kerbs, far ones first so near ones cover them."""
    for depth in np.sort(rng.uniform(0.1, 0.95, rng.integers(1, 6))):
        side = -1 if rng.random() < 0.5 else 1
        foot_x = street.kerb_x(side, depth) + side * rng.uniform(0.0, 0.08)
        foot_y = street.height_at(depth)
        radius = (0.04 + 0.16 * depth) * rng.uniform(0.7, 1.2)
        is_tree = rng.random() < 0.7
        trunk_height = radius * rng.uniform(0.9, 1.5) if is_tree else 0.0
        centre_y = foot_y - trunk_height - radius * 0.8
        box = c.crop(foot_x - 1.2 * radius, centre_y - 1.2 * radius, foot_x + 1.2 * radius, foot_y)
        leaves = _jitter(rng, FOLIAGE, 12)
        if is_tree:
            trunk = (np.abs(box.x - foot_x) < max(radius * 0.12, 0.6 * c.pixel)) & (box.y > centre_y)
            box.paint(trunk, VEGETATION, _jitter(rng, BARK, 10) + 5 * box.grain)
        # A canopy with a lumpy outline, lit from above and mottled by clusters of leaves.
        dx, dy = box.x - foot_x, (box.y - centre_y) / 0.85
        angle = np.arctan2(dy, dx)
        outline = radius * (1 + 0.1 * np.sin(5 * angle + rng.uniform(0, 6))
                            + 0.07 * np.sin(9 * angle + rng.uniform(0, 6)))
        canopy = dx * dx + dy * dy < outline * outline
        light = 1.2 - 0.5 * np.clip((box.y - (centre_y - radius)) / (2 * radius), 0, 1)
        mottle = 1 + 0.18 * box.blotches + 0.1 * box.grain
        box.paint(canopy, VEGETATION, leaves * light[..., None] * mottle)


def _draw_cars(c: _Canvas, rng: np.random.Generator, street: _Street) -> None:
    """Cars seen from behind on the road, far ones first."""
    for depth in np.sort(rng.uniform(0.3, 0.95, rng.integers(1, 4))):
        half_width = street.half_width(depth)
        width = 2 * half_width * rng.uniform(0.28, 0.4)
        centre_x = street.centre(depth) + half_width * rng.uniform(-0.6, 0.6)
        ground_y = street.height_at(depth)
        _draw_car(c, rng, centre_x, ground_y, width)


def _draw_car(c: _Canvas, rng: np.random.Generator, centre_x: float, ground_y: float,
              width: float) -> None:
    c = c.crop(centre_x - 0.6 * width, ground_y - width, centre_x + 0.6 * width, ground_y + 0.06 * width)
    # Car coordinates: across in car widths (|u| < 0.5 is the body), up in car widths from the road.
    u = (c.x - centre_x) / width
    up = (ground_y - c.y) / width
    shadow = (np.abs(u) < 0.55) & (up > -0.04) & (up < 0.05) & (c.classes == ROAD)
    c.photo[shadow] *= 0.55
    body = _jitter(rng, _pick(rng, CAR_BODIES), 12)
    # The body is lit from the sky above: brighter towards the roof.
    colour = body * (0.8 + 0.5 * np.clip(up, 0, 0.8))[..., None] + 5 * c.grain
    roof = rng.uniform(0.62, 0.8)
    cabin_half = 0.42 - 0.12 * (up - 0.45) / (roof - 0.45)
    window = (up > 0.5) & (up < roof - 0.05) & (np.abs(u) < cabin_half - 0.07)
    lights = (up > 0.28) & (up < 0.38) & (np.abs(u) > 0.34) & (np.abs(u) < 0.47)
    tyres = (up < 0.14) & (np.abs(u) > 0.3)
    colour = np.where(window[..., None], GLASS * (0.7 + 0.6 * np.clip(up - 0.5, 0, 1))[..., None],
                      colour)
    colour = np.where(lights[..., None], TAIL_LIGHT, colour)
    colour = np.where(tyres[..., None], TYRE + 4 * c.grain, colour)
    shape = (((np.abs(u) < 0.5) & (up >= 0.08) & (up < 0.45))
             | (tyres & (np.abs(u) < 0.47) & (up >= 0))
             | ((up >= 0.45) & (up < roof) & (np.abs(u) < cabin_half)))
    c.paint(shape, CAR, colour)


def _develop(c: _Canvas, rng: np.random.Generator, street: _Street, haze_colour: np.ndarray) -> np.ndarray:
    """The finished photo: scene lighting, haze of the sky's colour near the horizon, noise, 8 bits."""
    exposure = rng.uniform(0.82, 1.12) * (1 + rng.uniform(-0.05, 0.05, 3)).astype(np.float32)
    haze = 0.35 * np.exp(-np.abs(c.y - street.horizon) / 0.06)[..., None]
    photo = c.photo * exposure
    photo = photo + (haze_colour - photo) * haze
    photo = photo + 3 * c.grain
    return np.clip(photo, 0, 255).astype(np.uint8)
