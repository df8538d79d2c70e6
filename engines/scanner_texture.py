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
- **renewal** (``fixed`` noise): as the tissue moves, each square in turn fades into a fresh one (``SquareCycle``),
  as a hand-held scanner's speckle renews, while a still probe keeps them all;
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

META_KEY = "scanner_texture"
QUANT = 25.0  # 8-bit code per unit of strength: ±5.1 kept, at 0.04
MAX_BLOCKS = 4096
FADE_SHARE = 0.25  # anchored: the share of a square's cycle spent fading into the next (SquareCycle)
SQUARE_LIFE = 0.25  # anchored: a square's cycle, as the path over which the formed grain's scatterers' coherence falls
# by this many nepers (beam_speckle.RENEW_DEPTH_SHARE: 1.0 is the path of 1/e); chosen on real videos (lq2real card)


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


def quilt(blocks: np.ndarray, shape: tuple[int, int], choice: np.ndarray, then: np.ndarray | None = None,
          fade: np.ndarray | None = None) -> np.ndarray:
    """A plane of ``shape`` tiled by ``blocks`` overlapping a third each way, ``choice`` (uniforms in [0, 1), one per
    tile or more) picking each. Overlaps are cross-faded by sine and cosine ramps, whose squares sum to one, so two
    independent unit-variance textures mix to unit variance: no brighter or fainter seams. ``then`` and ``fade`` (one
    per tile, fade in [0, 1]) fade a tile from its ``choice`` block to its ``then`` block by the same ramps."""
    size = blocks.shape[1]
    overlap = size // 3
    step = size - overlap
    ramp = np.ones(size, np.float32)
    t = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
    ramp[:overlap], ramp[size - overlap:] = np.sin(t * np.pi / 2), np.cos(t * np.pi / 2)
    weight = np.outer(ramp, ramp)
    height, width = shape
    ys, xs = range(-overlap, height, step), range(-overlap, width, step)
    tiles = len(ys) * len(xs)
    acc = np.zeros((height + 2 * size, width + 2 * size), np.float32)
    power = np.zeros_like(acc)
    picks = _picks(choice, tiles, len(blocks))
    if fade is not None:
        angle = np.asarray(fade, np.float32).ravel()[:tiles] * (np.pi / 2)
        nexts, old, new = _picks(then, tiles, len(blocks)), np.cos(angle), np.sin(angle)
    k = 0
    for y in ys:
        for x in xs:
            block = blocks[picks[k]]
            if fade is not None and new[k] > 0:
                block = old[k] * block + new[k] * blocks[nexts[k]]
            acc[y + size:y + 2 * size, x + size:x + 2 * size] += weight * block
            power[y + size:y + 2 * size, x + size:x + 2 * size] += weight * weight
            k += 1
    return (acc / np.sqrt(np.maximum(power, 1e-6)))[size:size + height, size:size + width]


def _picks(choice: np.ndarray, tiles: int, count: int) -> np.ndarray:
    picks = (np.asarray(choice).ravel()[:tiles] * count).astype(int) % count
    if picks.size < tiles:
        raise ValueError(f"quilt: {picks.size} choices for {tiles} tiles")
    return picks


class SquareCycle:
    """The anchored texture's squares renewing as the tissue moves: each square in turn fades into a fresh one, as a
    hand-held scanner's speckle renews, while a still probe keeps them all (``advance(0)`` changes nothing).

    Quilted squares cannot be renewed as the formed grain's complex field is, by mixing in a share of fresh
    scatterers every frame: a mix of many textures turns Gaussian (tried on ``lq2real``: skewness 0.73 → 0.27, excess
    kurtosis 2.43 → 0.35 after 20 steps), and the skew and heavy tail are what real frames' squares carry. So a square
    stays whole for most of its cycle and fades into the next for the last ``FADE_SHARE`` of it (a blend of two, no
    more than the quilt's own overlaps already are), the squares' cycles staggered so that a steady share renews
    per unit of path. ``uniforms``: each tile's choice now, ``then``: the one it fades into, ``fade`` its weight."""

    def __init__(self, first: np.ndarray, rng: np.random.Generator):
        self.rng = rng
        self.now = np.asarray(first, np.float64).ravel().copy()
        self.then = rng.random(self.now.size)
        self.phase = rng.random(self.now.size) - FADE_SHARE  # all whole at first, cycles spread over one
        self.turns = 0  # how many times it changed: the stage's key for re-quilting

    def advance(self, cycles: float) -> None:
        """Move every square ``cycles`` of its cycle on; a square past its end is the next one, and fades on."""
        if cycles <= 0:
            return
        self.phase += min(cycles, 2.0)  # farther than two cycles is all squares fresh either way
        while (done := self.phase >= 1.0).any():
            self.now[done], self.then[done] = self.then[done], self.rng.random(int(done.sum()))
            self.phase[done] -= 1.0
        self.turns += 1

    def restart(self) -> None:
        """Every square fresh (a new view of other tissue)."""
        self.now, self.then = self.rng.random(self.now.size), self.rng.random(self.now.size)
        self.phase = self.rng.random(self.now.size) - FADE_SHARE
        self.turns += 1

    @property
    def fade(self) -> np.ndarray:
        return np.clip((self.phase - (1.0 - FADE_SHARE)) / FADE_SHARE, 0.0, 1.0)


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

    def tiles(self, view, grid_shape: tuple[int, int], rays: int, samples: int) -> tuple[tuple[int, int], int]:
        """The quilt's shape in block pixels on a ``grid_shape`` (samples, rays) polar grid of ``view`` (a Fan or a
        Band; ``rays`` and ``samples`` span its beams), and its number of tiles: a block pixel is ``depth_px``
        real-frame pixels over this view's beam length, along the beam and across it at mid-depth."""
        px_per_block_px = view.depth_px / self.config.depth_px
        samples_per = (samples - 1) / view.depth_px * px_per_block_px  # grid samples per block pixel
        rays_per = (rays - 1) / view.width_px * px_per_block_px
        height = max(1, round(grid_shape[0] / samples_per))
        width = max(1, round(grid_shape[1] / rays_per))
        step = self.config.block - self.config.block // 3
        return (height, width), (height // step + 2) * (width // step + 2)

    def plane(self, choice: np.ndarray, view, grid_shape: tuple[int, int], rays: int, samples: int,
              then: np.ndarray | None = None, fade: np.ndarray | None = None) -> np.ndarray:
        """Quilted texture on the polar grid (``tiles``), each tile's block picked by its ``choice`` (uniforms), and
        faded into its ``then`` block by ``fade`` where given (``SquareCycle``)."""
        shape, _ = self.tiles(view, grid_shape, rays, samples)
        texture = quilt(self.blocks, shape, choice, then, fade)
        return cv2.resize(texture, (grid_shape[1], grid_shape[0]), interpolation=cv2.INTER_LINEAR)
