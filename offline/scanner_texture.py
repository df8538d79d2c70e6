"""Fit the scanner-texture stage (engines.scanner_texture) to real scanner frames: texture blocks cut from their
tissue, the texture's strength at each grey level, and the grey map from a model's outputs to the real frames.

Only the frames given are used, so fit on the training side of a split (``usnst real-scanners``: by recording and by
maker) and judge on the other (``research/real_table.py``).
"""
from __future__ import annotations

import cv2
import numpy as np

from usnst.engines.acoustics import ECHO_LEVEL
from usnst.engines.scanner_texture import ScannerTextureConfig
from usnst.offline.realism import LOWPASS_SIGMA, TEXTURE_SIGMA, speckle, tissue_mask

MAX_BYTES = 600_000  # blocks kept, at most: the stage travels in checkpoint and ONNX metadata
MIN_PIXELS = 200  # tissue pixels at a grey level for its strength to be measured there
STRUCTURED_SHARE = 0.25  # the squares left out: those whose texture varies most at the anatomy's scale


def grey_map(sources: list[np.ndarray], targets: list[np.ndarray]) -> np.ndarray:
    """The monotone 256-entry map (uint8) that takes the tissue grey levels of ``sources`` to those of ``targets``
    (histogram matching of the pooled tissue pixels, uint8 frames; black stays black)."""
    pooled = lambda images: np.concatenate([i[tissue_mask(i)] for i in images])
    src, tgt = pooled(sources), pooled(targets)
    if src.size == 0 or tgt.size == 0:
        raise ValueError("grey map: no tissue in the " + ("model's outputs" if src.size == 0 else "target frames"))
    cdf = np.searchsorted(np.sort(src), np.arange(256), side="right") / src.size
    lut = np.quantile(tgt, np.clip(cdf, 0, 1))
    lut[0] = 0
    return np.maximum.accumulate(lut).astype(np.uint8)


def texture_blocks(frames: list[np.ndarray], block: int, per_frame: int, rng: np.random.Generator,
                   strength: np.ndarray) -> np.ndarray:
    """Up to ``per_frame`` squares of ``block`` px from each frame's texture (``speckle``), each wholly inside its
    tissue, divided by ``strength`` (the set's, grey 0–1) at its own local mean grey: (n, block, block) float32. Each
    square keeps how much fainter or stronger it is than the set at its grey level (squares of homogeneous tissue are
    fainter than the set's root mean square, which specular flecks and boundaries raise); the stage multiplies by the
    strength at the grey level it lays the square on.

    A square whose texture still varies at the anatomy's scale (what is left of it under the σ-3 px low-pass the
    invented-structure measure looks through) holds a piece of structure — a specular line's fleck, a wall, the edge
    of a shadow — which laid somewhere else is structure the input does not have: the STRUCTURED_SHARE of squares
    with the most of it are left out."""
    out, structure = [], []
    for frame in frames:
        inside = cv2.erode(tissue_mask(frame).astype(np.uint8), np.ones((block, block), np.uint8), anchor=(0, 0))
        ys, xs = np.nonzero(inside[: frame.shape[0] - block + 1, : frame.shape[1] - block + 1])
        texture = speckle(frame).astype(np.float32)
        mean = cv2.GaussianBlur(frame.astype(np.float32), (0, 0), TEXTURE_SIGMA)
        for k in rng.choice(len(ys), min(per_frame, len(ys)), replace=False) if len(ys) else ():
            square = texture[ys[k]:ys[k] + block, xs[k]:xs[k] + block]
            if square.std() > 0.5:  # a flat square (saturated, or an overlay left in) has no texture to give
                local = np.clip(mean[ys[k]:ys[k] + block, xs[k]:xs[k] + block], 0, 255).astype(np.int32)
                out.append(square / (255.0 * strength[local]))
                structure.append(cv2.GaussianBlur(out[-1], (0, 0), LOWPASS_SIGMA).std())
    if not out:
        raise ValueError(f"no {block}-px square of tissue in any of the {len(frames)} frames: smaller blocks, or "
                         "frames with more tissue")
    structure = np.array(structure)
    return np.stack(out)[structure <= np.quantile(structure, 1 - STRUCTURED_SHARE)]


def strength_curve(frames: list[np.ndarray]) -> np.ndarray:
    """The texture's root-mean-square strength (grey 0–1) at each local mean grey level 0…255, in the frames'
    tissue: measured in bins of 8 levels with at least MIN_PIXELS pixels, interpolated between, held flat beyond."""
    means, powers = [], []
    for frame in frames:
        mask = tissue_mask(frame)
        means.append(cv2.GaussianBlur(frame.astype(np.float32), (0, 0), TEXTURE_SIGMA)[mask])
        powers.append(speckle(frame)[mask] ** 2)
    means, powers = np.concatenate(means), np.concatenate(powers)
    bins = np.clip(means // 8, 0, 31).astype(int)
    counts = np.bincount(bins, minlength=32)
    rms = np.sqrt(np.bincount(bins, powers, minlength=32) / np.maximum(counts, 1))
    measured = counts >= MIN_PIXELS
    if not measured.any():
        raise ValueError("texture strength: too little tissue in the frames to measure it")
    return np.interp(np.arange(256), (np.arange(32) * 8 + 4)[measured], rms[measured]) / 255.0


def echo_depth_px(frames: list[np.ndarray]) -> float:
    """The frames' median echo depth in pixels (rows from the first to the last with echo): the beam length the
    texture's scale is given in."""
    depths = []
    for frame in frames:
        rows = np.flatnonzero((frame > ECHO_LEVEL * 255).any(axis=1))
        if rows.size:
            depths.append(rows[-1] - rows[0] + 1)
    if not depths:
        raise ValueError("no echo in the real frames")
    return float(np.median(depths))


def fit_scanner_texture(real: list[np.ndarray], outputs: list[np.ndarray], block: int = 48, per_frame: int = 6,
                        seed: int = 0, sources: str = "") -> ScannerTextureConfig:
    """The stage from ``real`` frames (uint8; the training side) for a model whose outputs on the simulator's
    frames are ``outputs`` (uint8, before any grain: the grey map takes their tissue grey levels to the real
    frames'). Blocks are drawn evenly from the frames and at most MAX_BYTES of them kept."""
    rng = np.random.default_rng(seed)
    strength = strength_curve(real)
    blocks = texture_blocks(real, block, per_frame, rng, strength)
    keep = max(1, min(len(blocks), MAX_BYTES // block ** 2))
    blocks = blocks[np.sort(rng.choice(len(blocks), keep, replace=False))]
    return ScannerTextureConfig.from_blocks(blocks, strength, grey_map(outputs, real) / 255.0, echo_depth_px(real),
                                            sources)
