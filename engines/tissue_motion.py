"""Where the imaged tissue has moved since the stream began, estimated from the input frames alone.

A scanner's speckle comes from scatterers fixed in the body, so when the probe moves its grain moves with the
anatomy. A grain drawn once per stream stays on the screen while the anatomy slides under it; one drawn per frame
boils. The beam-speckle stage therefore keeps its scatterers in the coordinates of the stream's first frame and
needs, for every frame, the map from its pixels to those coordinates: this module's ``TissueMotion``.

Why a rigid (Euclidean) motion, and why against a key frame:
- A probe sweeping in plane moves the whole anatomy rigidly on screen (translation and rotation about the apex).
  Dense optical flow (OpenCV DIS) on simulator frames errs by as much as the motion itself between consecutive frames
  (0.2–0.5 px on 0.6 px at 256²): the speckle of the input decorrelates and the fan's edges stay still. One rigid
  motion fitted to the whole sector by ECC (Evangelidis & Psarakis 2008, ``cv2.findTransformECC``) on the frame
  shrunk to 128 px errs by 0.1–0.3 px on 5 px. A linear array's view is shrunk to 192 px: that keeps more of the
  input's own speckle, which on a trapezoid of plain tissue is most of what moves (the grain followed its tissue in
  60 → 81 % of windows), and on real hand-held linear-array videos agrees with the speckle's own best match more
  often (74 → 76 %). A fan keeps 128: there the finer match lost 4–16 points (curvilinear, abdominal scenes of both
  formations), whose input speckle moves less with the tissue than their anatomy does.
- The view's edges stay on the screen while the tissue moves, so the match leaves out tissue near them. A linear
  array's view (a band, or its trapezoid format: a wide flat face) needs a wider margin than a fan: with the fan's
  3 working px its straight sides held the estimate at a fraction of the true motion (the grain followed the tissue in
  0 % of a linear view's windows), while a fan's short view loses too much tissue to the wider margin.
- Errors of consecutive estimates add up; estimates against a key frame do not. The key frame is kept until the
  anatomy has moved a tenth of the frame, then the current frame becomes the key.
- The frames' own speckle decorrelates from frame to frame where they show little anatomy (a linear array's view of
  plain tissue: electronic noise and the line density redraw it), and on such a view the match reads 0.55–0.9 frame
  after frame. A poorer match is therefore not by itself a new view: the grain starts afresh only where the match is
  poor outright or falls well below the last one (a fixed 0.6 restarted the grain mid-sweep on such views).
  Smoothing the estimates over time (a constant-speed α-β filter) helped on the phantom's smooth sweeps and hurt on
  real hand-held videos, whose probe moves in jerks: it is not used (docs/lab/lq2hq_fast.md).
- A paused probe must give a still output: a motion within ``STILL_PX`` of the last one is taken as no motion (a
  simulator's electronic noise moves the estimate by a few hundredths of a pixel), and an identical frame costs nothing.

Tissue that deforms (a beating heart) is followed only as far as a rigid motion describes it.

What the motion carries is renewed in part as it goes (``BeamSpeckle.renewed``): a hand-held probe's speckle does.

A simulator knows where its probe is: a frame that comes with its pose (``image_to_world``, docs/PROTOCOL.md) is
placed by it exactly, with no estimate and no drift; a probe that leaves the reference frame's plane by more than a
scanner's slice thickness images other scatterers, so the grain starts afresh there.
"""
from __future__ import annotations

import logging
import math

import cv2
import numpy as np

from usnst.engines.acoustics import ECHO_LEVEL

log = logging.getLogger(__name__)

WORK_SIDE = 128  # px: the longer side a fan's frame is shrunk to for estimating (the anatomy, not the speckle)
FLAT_FACE_WORK_SIDE = 192  # a linear array's band or trapezoid (128 lost a trapezoid's motion)
EDGE_PX = 3  # working px of tissue along the view's edges left out of the match: a fan's (phased, curvilinear)
FLAT_FACE_EDGE_PX = 7  # a linear array's band or trapezoid (centre error 0.85 → 0.08 of the true motion at 256²;
# a fan's would rise from 0.05 to 0.15 with it)
STILL_PX = 0.15  # px of the full frame: smaller changes of the motion are electronic noise, not the probe
REKEY_SHARE = 0.1  # the key frame is replaced once the anatomy moved this share of the working frame
NEW_VIEW_CORRELATION = 0.3  # below this the frames show different anatomy (a new view): the grain starts afresh
NEW_VIEW_DROP = 0.25  # so does a match this much worse than the last one (other scenes of one probe match to 0.86)
SLICE_MM = 1.0  # a probe moved this far out of the reference plane images other scatterers (elevation beam ~1-3 mm)


class TissueMotion:
    """``update(frame)`` → a 3×3 matrix taking a pixel (x, y, 1) of this frame to where its tissue was in the
    reference frame (the first of the stream, or the first after a change of view). ``lost`` counts frames whose
    motion could not be estimated (the grain then starts afresh there). ``update(frame, pose)`` with the frame's
    4×4 image-to-world pose takes the motion from the poses instead; a stream that starts or stops sending poses
    starts afresh. ``flat_face``: the view has a flat face (a linear array's band or trapezoid, or a sector cut by
    the frame's top), whose straight edges need the wider margin."""

    def __init__(self):
        self.lost = 0
        self.starts = -1  # how many times the motion started afresh (a new reference: other tissue, or poses begun)
        self.reset()

    def reset(self) -> None:
        self.starts += 1
        self.to_reference = np.eye(3)
        self._raw: np.ndarray | None = None
        self._key: tuple[np.ndarray, np.ndarray] | None = None  # shrunk key frame and its mask
        self._key_to_reference = np.eye(3)
        self._to_key = np.eye(2, 3, dtype=np.float32)  # the last estimate, in working pixels: a warm start
        self._scale: np.ndarray | None = None  # full → working pixel coordinates
        self._pose: np.ndarray | None = None  # the reference frame's pose, when the stream sends poses
        self._last_pose: np.ndarray | None = None  # the last frame's
        self.off_plane_step_mm = 0.0  # how far (mm) the last posed frame lies off the plane of the one before it
        self._correlation = 0.0  # the last match's (none yet)

    def update(self, frame: np.ndarray, pose: np.ndarray | None = None, flat_face: bool = False) -> np.ndarray:
        if pose is not None or self._pose is not None:
            return self._from_pose(frame, pose, flat_face)
        if self._raw is not None and frame.shape == self._raw.shape and np.array_equal(frame, self._raw):
            return self.to_reference
        first = self._raw is None or frame.shape != self._raw.shape
        small, mask = self._shrink(frame, flat_face)
        if first:
            return self._restart(frame, small, mask)
        self._raw = frame.copy()
        if mask.sum() < 64:  # a blank frame: nothing to follow, keep the grain where it was
            return self.to_reference
        try:
            correlation, to_key = cv2.findTransformECC(small, self._key[0], self._to_key.copy(), cv2.MOTION_EUCLIDEAN,
                                                       (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4),
                                                       self._key[1], 1)
        except cv2.error:
            correlation, to_key = -1.0, None
        if correlation < NEW_VIEW_CORRELATION or correlation < self._correlation - NEW_VIEW_DROP:
            self.lost += 1
            log.debug("tissue motion lost (correlation %.2f): the grain starts afresh", correlation)
            return self._restart(frame, small, mask)
        self._to_key, self._correlation = to_key, correlation
        s = self._scale
        to_reference = self._key_to_reference @ np.linalg.inv(s) @ np.vstack([to_key, [0, 0, 1]]) @ s
        if _largest_shift(to_reference, self.to_reference, frame.shape) >= STILL_PX:
            self.to_reference = to_reference
        if math.hypot(to_key[0, 2], to_key[1, 2]) > REKEY_SHARE * max(small.shape) or abs(to_key[1, 0]) > 0.05:
            self._key, self._key_to_reference = (small, mask), to_reference  # the estimate, not the still-kept one
            self._to_key = np.eye(2, 3, dtype=np.float32)
        return self.to_reference

    def _from_pose(self, frame: np.ndarray, pose: np.ndarray | None, flat_face: bool) -> np.ndarray:
        if pose is None or self._pose is None or frame.shape != self._raw.shape:  # poses start, stop, or a new size
            self.reset()
            if pose is None:
                return self.update(frame, flat_face=flat_face)
            self._pose, self._raw, self._last_pose = pose, frame.copy(), pose
            return self.to_reference
        step_mm = pose_motion(self._last_pose, pose, frame.shape)[1]
        to_reference, off_plane_mm = pose_motion(self._pose, pose, frame.shape)
        if off_plane_mm > SLICE_MM:  # other scatterers: this frame becomes the reference
            self.reset()
            self._pose, self._raw = pose, frame.copy()
        elif _largest_shift(to_reference, self.to_reference, frame.shape) >= STILL_PX:
            self.to_reference = to_reference
        self._last_pose, self.off_plane_step_mm = pose, step_mm
        return self.to_reference

    def _restart(self, frame: np.ndarray, small: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """This frame becomes the reference (and the key): the stream's first, or a new view."""
        self.reset()
        self._raw, self._scale, self._key = frame.copy(), _scaling(frame.shape, small.shape), (small, mask)
        return self.to_reference

    @staticmethod
    def _shrink(frame: np.ndarray, flat_face: bool) -> tuple[np.ndarray, np.ndarray]:
        """The frame at the working size (area average, then σ 1 px), and its lit pixels at least the view's margin
        from the sector's edges (which stay on the screen and would pull the estimate to no motion)."""
        side, edge_px = (FLAT_FACE_WORK_SIDE, FLAT_FACE_EDGE_PX) if flat_face else (WORK_SIDE, EDGE_PX)
        h, w = frame.shape
        s = min(1.0, side / max(h, w))  # a smaller frame is used as it is
        size = (max(8, round(w * s)), max(8, round(h * s)))
        small = cv2.GaussianBlur(cv2.resize(frame.astype(np.float32), size, interpolation=cv2.INTER_AREA), (0, 0), 1.0)
        mask = cv2.erode((small > ECHO_LEVEL).astype(np.uint8), np.ones((2 * edge_px + 1,) * 2, np.uint8))
        return small, mask


def pose_motion(reference: np.ndarray, pose: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, float]:
    """The 3×3 map from pixels of a frame at ``pose`` to pixels of the frame at ``reference`` (both 4×4
    image-to-world), its points projected onto the reference plane, and how far (mm) the frame's corners lie off
    that plane."""
    axes, origin = reference[:3, :2], reference[:3, 3]
    to_plane = np.linalg.pinv(axes)  # world offset from the origin → (column, row) in the reference image
    placed = pose[:3, [0, 1, 3]] - np.column_stack([np.zeros(3), np.zeros(3), origin])  # (x, y, 1) → offset
    to_reference = np.vstack([to_plane @ placed, [0, 0, 1]])
    normal = np.cross(axes[:, 0], axes[:, 1])
    h, w = shape
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], float).T
    off_plane = np.abs(normal @ (placed @ corners)) / np.linalg.norm(normal)
    return to_reference, float(off_plane.max())


def _scaling(full: tuple[int, int], small: tuple[int, int]) -> np.ndarray:
    """Full-frame pixel centres to the shrunk frame's (cv2.resize's convention: x' = s·(x + ½) − ½)."""
    sx, sy = small[1] / full[1], small[0] / full[0]
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]])


def _largest_shift(a: np.ndarray, b: np.ndarray, shape: tuple[int, int]) -> float:
    """How far apart two motions put the frame's corners, in pixels."""
    h, w = shape
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], float).T
    return float(np.abs((a - b) @ corners)[:2].max())
