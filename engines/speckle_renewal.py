"""Whether the input's own speckle renews as its tissue moves: how much of a scanner's renewal the stage's grain gets.

A hand-held scanner's speckle does not last: the probe tilts out of its plane and presses the tissue, and the grain
decorrelates over a few pixels of motion; the stage renews its scatterers over a path chosen on real scanners'
videos (``beam_speckle.RENEW_DEPTH_SHARE``, stop 41). A simulator whose scatterers are fixed in its world and whose
probe slides in plane keeps its speckle while the tissue stays in view, and so does its realistic counterpart (the
phantom's HQ: correlation after 8 frames of a sweep 0.45, where the renewing grain kept 0.22). The input says which:
its own speckle, carried by the tissue's motion onto a later frame, correlates less the farther the tissue
travelled in between — or not at all less.

Measured on the frames the stage already receives: each moving frame's speckle band (the frame at most
``WORK_SIDE`` px, a difference of Gaussians σ ``BAND``: the input's grain, not its anatomy) is compared with those
of the last ``FRAMES`` moving frames, each warped onto it by the tissue motion. A frame's correlation with the one
before carries the simulator's per-frame noise and one step's loss; against frames farther back the log-correlation
falls further in proportion to the extra path, so the noise cancels in the difference. The slope (least squares
through the origin, older evidence fading by ``MEMORY`` a frame) is the input's renewal rate (``rate``: 1/e per
1/rate px of path). As a share of a scanner's rate it reads 0.5–3.5 on real scanners' videos and 0–0.3 (median 0)
on every view of the phantom (stop 52, docs/lab/lq2hq_fast.md): the stage takes it as evidence of renewal, not as the
rate itself (on real videos the rigid motion estimate's own error reads as renewal too), so an input that shows
half a scanner's rate or more gets all of it (``shown``). An input with no speckle to follow (a one-frame
correlation below ``MIN_CORRELATION``: no grain, or grain drawn anew every frame) and a stream before its first
evidence show none: the grain then stays with its tissue.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from usnst.engines.acoustics import ECHO_LEVEL

WORK_SIDE = 256  # px: frames are measured at most this size (cost); the phantom's LQ grain is 2–3 px at 256
BAND = (0.7, 3.0)  # working px: Gaussian σ of the difference that keeps the input's speckle
FRAMES = 4  # moving frames compared with each new one
MEMORY = 0.96  # per moving frame: the weight older evidence keeps (a second or so of a stream)
MIN_CORRELATION = 0.2  # below this the one-frame pair shares too little speckle to measure its loss
MIN_PIXELS = 400  # working pixels of tissue both frames must show
EDGE_PX = 3  # working px left out along the view's edges (they stay on the screen)
SHOWN_SHARE = 0.5  # an input renewing at this share of a scanner's rate or faster shows all of the scanner's renewal
MIN_EVIDENCE = 10.0  # px²: Σ (extra path)² the rate needs before it counts (two frames of a sweep at 0.6 px a frame)


class SpeckleRenewal:
    """``update(frame, to_reference)`` after each frame's tissue motion (``engines.tissue_motion``: a pixel of this
    frame → the reference frame); ``rate``: the input's renewal per pixel of tissue path (0: none measured);
    ``shown(scanner_rate)``: the share of a scanner's renewal the stage's grain gets."""

    def __init__(self):
        self._sums = [0.0, 0.0]  # Σ x·y and Σ x² of (extra path, log-correlation lost)
        self.clear()

    def clear(self) -> None:
        """Forget the frames (a new view or size), not what was learnt about the input."""
        # per moving frame: its speckle band, tissue mask, working scale, motion and the path travelled so far
        self._ring: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]] = []
        self._centre: np.ndarray | None = None

    @property
    def rate(self) -> float:
        xy, xx = self._sums
        return max(-xy / xx, 0.0) if xx > 0 else 0.0

    def shown(self, scanner_rate: float) -> float:
        if self._sums[1] < MIN_EVIDENCE or scanner_rate <= 0:
            return 0.0
        return min(self.rate / (SHOWN_SHARE * scanner_rate), 1.0)

    def update(self, frame: np.ndarray, to_reference: np.ndarray) -> None:
        ring = self._ring
        if ring and (ring[0][0].shape != _work_shape(frame.shape)):
            self.clear()
        if ring and np.array_equal(to_reference, ring[-1][3]):
            return  # the tissue did not move: nothing to learn, nothing to keep
        if self._centre is None:
            h, w = frame.shape
            self._centre = np.array([(w - 1) / 2, (h - 1) / 2, 1.0])
        band, mask, scale = _speckle_band(frame)
        path = 0.0
        if ring:
            path = ring[-1][4] + float(np.hypot(*((to_reference - ring[-1][3]) @ self._centre)[:2]))
            pairs = [(path - p, _warped_correlation(b, m, s, t, band, mask, scale, to_reference))
                     for b, m, s, t, p in reversed(ring)]
            self._learn(pairs)
        ring.append((band, mask, scale, to_reference.copy(), path))
        del ring[:-FRAMES]

    def _learn(self, pairs: list[tuple[float, float | None]]) -> None:
        (p1, r1), farther = pairs[0], pairs[1:]
        if r1 is None or r1 < MIN_CORRELATION or not farther:
            return
        xy, xx = (s * MEMORY for s in self._sums)
        for p, r in farther:
            if r is not None:
                x, y = p - p1, math.log(max(r, 0.01) / r1)
                xy, xx = xy + x * y, xx + x * x
        self._sums = [xy, xx]


def _work_shape(shape: tuple[int, int]) -> tuple[int, int]:
    h, w = shape
    s = min(1.0, WORK_SIDE / max(h, w))
    return max(8, round(h * s)), max(8, round(w * s))


def _speckle_band(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The frame's speckle band at the working size, its tissue (lit, away from the view's edges), and the map from
    full-frame to working pixel coordinates (cv2.resize's pixel centres)."""
    h, w = frame.shape
    wh, ww = _work_shape(frame.shape)
    small = frame.astype(np.float32)
    if (wh, ww) != (h, w):
        small = cv2.resize(small, (ww, wh), interpolation=cv2.INTER_AREA)
    band = cv2.GaussianBlur(small, (0, 0), BAND[0]) - cv2.GaussianBlur(small, (0, 0), BAND[1])
    mask = cv2.erode((small > ECHO_LEVEL).astype(np.uint8), np.ones((2 * EDGE_PX + 1,) * 2, np.uint8))
    sx, sy = ww / w, wh / h
    return band, mask, np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]])


def _warped_correlation(band0, mask0, scale0, motion0, band, mask, scale, motion) -> float | None:
    """The correlation of an earlier frame's speckle band, carried by the tissue motion onto this frame's, over the
    tissue both show (None: too little of it)."""
    to_earlier = scale0 @ np.linalg.inv(motion0) @ motion @ np.linalg.inv(scale)  # working px now → then
    h, w = band.shape
    flags = cv2.WARP_INVERSE_MAP
    carried = cv2.warpAffine(band0, to_earlier[:2].astype(np.float32), (w, h), flags=flags | cv2.INTER_LINEAR)
    shared = cv2.warpAffine(mask0, to_earlier[:2].astype(np.float32), (w, h), flags=flags | cv2.INTER_NEAREST) & mask
    inside = shared.astype(bool)
    if inside.sum() < MIN_PIXELS:
        return None
    a, b = carried[inside], band[inside]
    a, b = a - a.mean(), b - b.mean()
    norm = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / norm if norm > 0 else None
