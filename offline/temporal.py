"""Temporal stability of stylized sequences: does the output flicker where the input does not?

A per-frame network can make a still scene shimmer (fresh injected noise every frame makes speckle 'boil') even
when each frame alone looks right. The measure compares how much the output changes from frame to frame with how
much the input does, on the same frames:

- ``ratio`` = mean |y_t − y_{t−1}| / mean |x_t − x_{t−1}|: 1 means the output moves exactly as much as the input,
  above 1 means added temporal change (flicker), below 1 means the output smooths motion away.
- ``static_output_change``: mean |y_t − y_{t−1}| over the pairs whose *input* did not change at all; a stable
  stylization gives 0 there. Values are in grey levels (0–255).

Neither says whether the grain *moves with the tissue*. A scanner's scatterers are fixed in the body, so when the
probe moves its fine texture moves with the anatomy; a grain drawn once per stream stays on the screen (a dirty
window) and a grain drawn every frame boils. ``texture_motion`` measures which: in windows of tissue, it finds
where the fine texture of one frame reappears in a later one and compares that shift with the anatomy's.

Sequences are read by usnst_io.media (image folders, videos, DICOM cines, recordings).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def flicker(inputs: list[np.ndarray], outputs: list[np.ndarray]) -> dict:
    """Frame-to-frame change of the outputs against that of the inputs (see the module docstring)."""
    if len(inputs) != len(outputs) or len(inputs) < 2:
        raise ValueError(f"need two equally long sequences of ≥ 2 frames, got {len(inputs)} and {len(outputs)}")
    d_in, d_out, static = [], [], []
    for t in range(1, len(inputs)):
        if outputs[t].shape != outputs[t - 1].shape or inputs[t].shape != inputs[t - 1].shape:
            raise ValueError(f"frame {t} changes size")
        din = float(np.mean(np.abs(inputs[t].astype(np.float32) - inputs[t - 1].astype(np.float32))))
        dout = float(np.mean(np.abs(outputs[t].astype(np.float32) - outputs[t - 1].astype(np.float32))))
        d_in.append(din)
        d_out.append(dout)
        if din == 0.0:
            static.append(dout)
    mean_in, mean_out = float(np.mean(d_in)), float(np.mean(d_out))
    return {"frames": len(inputs), "input_change": mean_in, "output_change": mean_out,
            "ratio": mean_out / mean_in if mean_in > 0 else (float("inf") if mean_out > 0 else 1.0),
            "static_pairs": len(static), "static_output_change": float(np.mean(static)) if static else None}


FINE_SIGMA = 2.0  # px: the fine texture is the frame minus its Gaussian(σ 2 px) mean — HQ's grain (FWHM ≈ 1.3 px),
# not the anatomy's slow variation nor an LQ render's coarser mottling


@dataclass(frozen=True)
class TextureWindows:
    """How texture motion is sampled: square windows (stride a quarter window), searched ± ``search`` px; a window
    counts only if the anatomy moved at least ``min_motion`` px (below that, following the tissue and staying on
    the screen look alike), and it follows the tissue if its texture's best match lies within ``tolerance`` px of
    the anatomy's shift."""

    window: int = 32
    search: int = 8
    min_motion: float = 1.5
    tolerance: float = 1.0


def fine_texture(frame: np.ndarray) -> np.ndarray:
    from usnst.offline.realism import speckle

    return speckle(frame, FINE_SIGMA).astype(np.float32)  # float32: what cv2.matchTemplate takes


def texture_motion(first: np.ndarray, later: np.ndarray, motion: np.ndarray, mask: np.ndarray,
                   windows: TextureWindows = TextureWindows()) -> dict:
    """Does the fine texture of ``first`` reappear in ``later`` where the anatomy went?

    ``motion``: (H, W, 2) displacement in pixels (dx, dy) of every pixel of ``first`` to where its tissue is in
    ``later`` (the phantom's true motion, or one estimated from the input); ``mask``: pixels of ``first`` that are
    tissue. Per window: the normalised cross-correlation of its fine texture with ``later``'s over all shifts within
    the search range. Returns the share of windows whose correlation peaks at the anatomy's shift (``following``),
    the mean correlation at the anatomy's shift (``after_motion``) and at zero shift (``at_zero``: texture stuck to
    the screen reads high there), and the number of windows."""
    if first.shape != later.shape or motion.shape != first.shape + (2,) or mask.shape != first.shape:
        raise ValueError(f"frames {first.shape} / {later.shape}, motion {motion.shape} and mask {mask.shape} differ")
    w, r = windows.window, windows.search
    a, b = fine_texture(first), fine_texture(later)
    h, width = first.shape
    following, after, at_zero = [], [], []
    for y in range(r, h - w - r + 1, w // 4):
        for x in range(r, width - w - r + 1, w // 4):
            if not mask[y:y + w, x:x + w].all():
                continue
            dx, dy = motion[y + w // 2, x + w // 2]
            if np.hypot(dx, dy) < windows.min_motion or max(abs(dx), abs(dy)) > r - 1:
                continue
            template = a[y:y + w, x:x + w]
            if template.std() < 1e-6:
                continue
            ncc = cv2.matchTemplate(b[y - r:y + w + r, x - r:x + w + r], template, cv2.TM_CCOEFF_NORMED)
            py, px = np.unravel_index(int(np.argmax(ncc)), ncc.shape)
            following.append(np.hypot(px - r - dx, py - r - dy) <= windows.tolerance)
            after.append(_bilinear(ncc, r + dx, r + dy))
            at_zero.append(float(ncc[r, r]))
    if not following:
        return {"windows": 0, "following": float("nan"), "after_motion": float("nan"), "at_zero": float("nan")}
    return {"windows": len(following), "following": float(np.mean(following)),
            "after_motion": float(np.mean(after)), "at_zero": float(np.mean(at_zero))}


def _bilinear(grid: np.ndarray, x: float, y: float) -> float:
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    fx, fy = x - x0, y - y0
    g = grid[y0:y0 + 2, x0:x0 + 2]
    return float(g[0, 0] * (1 - fx) * (1 - fy) + g[0, 1] * fx * (1 - fy) + g[1, 0] * (1 - fx) * fy + g[1, 1] * fx * fy)


def merge_texture_motion(results: list[dict]) -> dict:
    """Window-weighted means over several frame pairs (scenes)."""
    n = sum(r["windows"] for r in results)
    if n == 0:
        return {"windows": 0, "following": float("nan"), "after_motion": float("nan"), "at_zero": float("nan")}
    mean = lambda key: float(sum(r[key] * r["windows"] for r in results if r["windows"]) / n)
    return {"windows": n, "following": mean("following"), "after_motion": mean("after_motion"), "at_zero": mean("at_zero")}


def sequence_texture_motion(inputs: list[np.ndarray], outputs: list[np.ndarray], lag: int = 8,
                            windows: TextureWindows = TextureWindows(), flat_face: bool = False) -> dict:
    """``texture_motion`` of a stylized sequence without a phantom's ground truth: the anatomy's motion between
    frames ``lag`` apart is the rigid motion of the *input* (engines.tissue_motion, followed frame by frame; with
    ``flat_face`` as for a linear array's view), the windows those the input lights (fluid and the outside
    excluded). Pairs start every ``lag`` frames."""
    from usnst.engines.tissue_motion import TissueMotion
    from usnst.offline.realism import tissue_mask

    if len(inputs) != len(outputs):
        raise ValueError(f"need equally long sequences, got {len(inputs)} inputs and {len(outputs)} outputs")
    tracker, to_reference = TissueMotion(), []
    for frame in inputs:
        to_reference.append(tracker.update(np.asarray(frame, np.float32) / 255.0, flat_face=flat_face).copy())
    results = []
    for i in range(0, len(inputs) - lag, lag):
        h, w = inputs[i].shape
        forward = np.linalg.inv(to_reference[i + lag]) @ to_reference[i]  # a pixel of frame i → frame i + lag
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
        motion = np.stack([forward[0, 0] * xs + forward[0, 1] * ys + forward[0, 2] - xs,
                           forward[1, 0] * xs + forward[1, 1] * ys + forward[1, 2] - ys], axis=-1).astype(np.float32)
        results.append(texture_motion(outputs[i], outputs[i + lag], motion, tissue_mask(inputs[i]), windows))
    return {**merge_texture_motion(results), "lag": lag, "pairs": len(results), "motion_lost": tracker.lost}
