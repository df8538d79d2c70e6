"""A real scanner's texture, laid along the probe's beams: the beam-speckle stage's grain taken from real frames.

Against frames of real scanners every formed grain fails: nets trained against them, and the beam-speckle stage
fitted to their speckle size, are told apart by a patch classifier even once the anatomy is taken out of the patches
(texture-view C2ST 0.94–1.00 against held-out makers, docs/lab/real_scanners.md). A real frame's texture is more than
a PSF: log compression of partly developed speckle, a scanner's own filtering and edge enhancement, specular flecks.
Nobody here can write those down, but real frames carry them, so this stage takes the texture from them:

- **blocks**: squares of real frames' texture (each frame less its local mean, ``offline.realism.speckle``) cut from
  tissue, each divided by the real set's strength at its local grey level (so each keeps its own), kept as 8-bit;
- **quilting**: a texture plane of those blocks, overlapping a third and cross-faded so the sum keeps unit variance,
  the choice of block drawn from the stage's noise planes (so ``fixed`` noise gives one texture that moves with the
  tissue, ``frame`` a new one per frame, and a seed the same one), laid on the probe's polar grid: each block's
  rows run along a beam, so the texture leans with the beams and widens with depth as a sector scanner's does;
- **amplitude**: the grain's strength at each grey level, measured on the real frames (a scanner's texture is faint in
  dark fluid and strong in bright tissue);
- **grey map**: the monotone curve that takes the model's tissue grey levels to the real frames' (a scanner's display
  curve).

The texture's size follows the view: a block pixel is the real frames' beam length over this frame's, so the grain
takes the same share of the depth as on the scanners it came from, at any frame size. Stored in checkpoint metadata
(``scanner_texture``, beside ``beam_speckle``, whose fan fitting, anchoring and polar grid it uses); fitted by
``offline.scanner_texture``.
"""
from __future__ import annotations

import base64
import math
from dataclasses import asdict, dataclass, fields

import cv2
import numpy as np
from scipy.special import ndtr

META_KEY = "scanner_texture"
QUANT = 25.0  # 8-bit code per unit of strength: ±5.1 kept, at 0.04
MAX_BLOCKS = 4096


@dataclass(frozen=True)
class ScannerTextureConfig:
    """``blocks``: base64 of ``count`` × ``block`` × ``block`` uint8 (128 + QUANT · the block's texture in units of
    ``amplitude`` at its grey level); ``amplitude``: 256 grain strengths (grey 0–1) at each shown grey level; ``grey_map``: 256
    shown grey levels (0–1) for the model's grey level; ``depth_px``: a beam's length in pixels in the real frames the
    blocks came from; ``sources``: which recordings they were (for the card)."""

    blocks: str
    count: int
    block: int
    amplitude: tuple
    grey_map: tuple
    depth_px: float
    sources: str = ""

    def __post_init__(self):
        if not 8 <= self.block <= 256 or not 1 <= self.count <= MAX_BLOCKS:
            raise ValueError(f"scanner texture: {self.count} blocks of {self.block} px (1–{MAX_BLOCKS} of 8–256 px)")
        if len(self.amplitude) != 256 or len(self.grey_map) != 256:
            raise ValueError("scanner texture: amplitude and grey map need 256 entries each")
        if not 16 <= self.depth_px <= 1 << 16:
            raise ValueError(f"scanner texture: the real frames' beam length {self.depth_px} px is not plausible")
        expected = 4 * math.ceil(self.count * self.block ** 2 / 3)
        if len(self.blocks) != expected:
            raise ValueError(f"scanner texture: {len(self.blocks)} characters of blocks, {expected} expected")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["amplitude"], d["grey_map"] = list(self.amplitude), list(self.grey_map)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ScannerTextureConfig":
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        for key in ("amplitude", "grey_map"):
            d[key] = tuple(float(v) for v in d.get(key, ()))
        return cls(**d)

    @classmethod
    def from_blocks(cls, blocks: np.ndarray, amplitude: np.ndarray, grey_map: np.ndarray, depth_px: float,
                    sources: str = "") -> "ScannerTextureConfig":
        """From float blocks (n, b, b), in units of the strength at their grey level (about 1)."""
        codes = np.clip(np.round(blocks * QUANT + 128.0), 0, 255).astype(np.uint8)
        return cls(base64.b64encode(codes.tobytes()).decode("ascii"), int(blocks.shape[0]), int(blocks.shape[1]),
                   tuple(float(a) for a in amplitude), tuple(float(g) for g in grey_map), float(depth_px), sources)

    def decode(self) -> np.ndarray:
        codes = np.frombuffer(base64.b64decode(self.blocks), np.uint8)
        return ((codes.astype(np.float32) - 128.0) / QUANT).reshape(self.count, self.block, self.block)


def quilt(blocks: np.ndarray, shape: tuple[int, int], choice: np.ndarray) -> np.ndarray:
    """A plane of ``shape`` tiled by ``blocks`` overlapping a third each way, ``choice`` (uniforms in [0, 1), one per
    tile or more) picking each. Overlaps are cross-faded by sine and cosine ramps, whose squares sum to one, so two
    independent unit-variance textures mix to unit variance: no brighter or fainter seams."""
    size = blocks.shape[1]
    overlap = size // 3
    step = size - overlap
    ramp = np.ones(size, np.float32)
    t = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
    ramp[:overlap], ramp[size - overlap:] = np.sin(t * np.pi / 2), np.cos(t * np.pi / 2)
    weight = np.outer(ramp, ramp)
    height, width = shape
    ys, xs = range(-overlap, height, step), range(-overlap, width, step)
    acc = np.zeros((height + 2 * size, width + 2 * size), np.float32)
    power = np.zeros_like(acc)
    picks = (np.asarray(choice).ravel()[: len(ys) * len(xs)] * len(blocks)).astype(int) % len(blocks)
    if picks.size < len(ys) * len(xs):
        raise ValueError(f"quilt: {picks.size} choices for {len(ys) * len(xs)} tiles")
    k = 0
    for y in ys:
        for x in xs:
            acc[y + size:y + 2 * size, x + size:x + 2 * size] += weight * blocks[picks[k]]
            power[y + size:y + 2 * size, x + size:x + 2 * size] += weight * weight
            k += 1
    return (acc / np.sqrt(np.maximum(power, 1e-6)))[size:size + height, size:size + width]


class ScannerTexture:
    """The stage's grain source: ``plane(noise, view, grid_shape, rays, samples)`` → the texture on the polar grid
    (rays and samples of the stage's grid, the grid's margins included); ``shown(grey)`` the display curve;
    ``strength(shown)`` the grain's amplitude at each shown grey."""

    def __init__(self, config: ScannerTextureConfig):
        self.config = config
        self.blocks = config.decode()
        self.grey = np.asarray(config.grey_map, np.float32)
        self.amplitude = np.asarray(config.amplitude, np.float32)

    def shown(self, grey: np.ndarray) -> np.ndarray:
        """The grey map, linearly interpolated between its 256 entries (grey 0–1 in and out)."""
        x = np.clip(grey, 0.0, 1.0) * 255.0
        i = np.minimum(x.astype(np.int32), 254)
        f = x - i
        return self.grey[i] * (1.0 - f) + self.grey[i + 1] * f

    def strength(self, shown: np.ndarray) -> np.ndarray:
        return self.amplitude[np.clip(shown * 255.0 + 0.5, 0, 255).astype(np.int32)]

    def plane(self, noise: np.ndarray, view, grid_shape: tuple[int, int], rays: int, samples: int) -> np.ndarray:
        """Quilted texture on a ``grid_shape`` (samples, rays) polar grid of ``view`` (a Fan or a Band; ``rays`` and
        ``samples`` span its beams): a block pixel is ``depth_px`` real-frame pixels over this view's beam length,
        along the beam and across it at mid-depth."""
        px_per_block_px = view.depth_px / self.config.depth_px
        samples_per = (samples - 1) / view.depth_px * px_per_block_px  # grid samples per block pixel
        rays_per = (rays - 1) / view.width_px * px_per_block_px
        height = max(1, round(grid_shape[0] / samples_per))
        width = max(1, round(grid_shape[1] / rays_per))
        step = self.config.block - self.config.block // 3
        tiles = (height // step + 2) * (width // step + 2)
        texture = quilt(self.blocks, (height, width), ndtr(np.ravel(noise)[:tiles]))
        return cv2.resize(texture, (grid_shape[1], grid_shape[0]), interpolation=cv2.INTER_LINEAR)
