"""Speckle formed along the probe's beams: the stage that makes a net's output pass for a scanner's frame.

A patch classifier told every trained net's speckle from HQ's (C2ST 0.79–0.99), and it tells even ideal pixel-grid
speckle apart: the phantom's own mean grey plus log-Rayleigh speckle from a Gaussian PSF on the pixel grid read
0.96 (isotropic) and 0.80 (anisotropic) against HQ, where the same mean grey plus speckle formed *along beams* — a
complex field on the probe's polar grid (rays × samples), blurred by the PSF, log-compressed, then scan-converted to
pixels by bilinear interpolation — read 0.52 (24 phantoms; 0.50 on 48 × 4 classifiers;
`research/beam_speckle_ceiling.py`). A scanner's grain
is that: its lateral size grows with depth, it leans with each beam, and scan conversion interpolates
log-compressed samples. None of it is what a convolution at pixel resolution learns to make.

So the stage keeps what a net does well — the anatomy, the mean grey — and forms the grain as a scanner does:

    out = lowpass(net output) + contrast · scan_convert(ln |PSF ∗ (re + i·im)| − E[ln |…|])

``re``, ``im`` are standard-normal planes on the polar grid (the engine's noise: fixed, per frame, or off, as the
net's own planes). The fan (apex, radii, edge angles) is fitted to the input frame's echo region, once per fan: a
simulator's probe does not change its geometry between frames. With fixed noise (streams) the scatterers belong to
the tissue, as a scanner's do: the planes cover the fan with a margin, and each frame reads them where its tissue was
in the stream's first frame (``engines.tissue_motion``), so the grain moves with the anatomy and a paused probe
gives a still output. As the tissue moves they renew in part (``BeamSpeckle.renewed``), as a hand-held scanner's
speckle does — in real scanners' own videos it survives 80 ms of hand motion and is gone within a third of a second
(docs/lab/lq2hq_fast.md) — as far as the input's own speckle shows renewal (``engines.speckle_renewal``): a
simulator whose scatterers are fixed in its world keeps them while its tissue stays in view. The
speckle's parameters (PSF widths in rays and samples, the display's contrast per neper) are fitted to target
frames by ``offline.speckle_fit`` and stored with the model (checkpoint metadata ``beam_speckle``), with the beam
length of the views the net was trained on: a frame rendered at another size goes to the net resampled to that
scale, while the grain is formed at the frame's own size.

A model may carry a real scanner's texture instead (``engines.scanner_texture``, metadata ``scanner_texture``): the
same fan, polar grid, planes and anchoring, with squares of real frames' texture in place of the formed log-envelope,
their strength and the display's grey curve measured on real frames; they renew square by square over the path the
formed grain's scatterers renew over (``SquareCycle``).
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, fields, replace

import cv2
import numpy as np
from scipy.special import ndtr

from usnst.engines.acoustics import (
    ECHO_LEVEL,
    EULER_GAMMA,
    GREY_PER_NEPER_HQ,
    HQ_AXIAL_SIGMA_SAMPLES,
    HQ_LATERAL_SIGMA_RAYS,
    HQ_RAYS,
    HQ_SAMPLES,
)
from usnst.engines.base import Engine, EngineOptions, NoisePlanes, check_frame
from usnst.engines.scanner_texture import (
    SQUARE_LIFE,
    ScannerTexture,
    ScannerTextureConfig,
    SquareCycle,
)
from usnst.engines.speckle_renewal import SpeckleRenewal
from usnst.engines.tissue_motion import SLICE_MM, TissueMotion
from usnst_io.limits import check_config

log = logging.getLogger(__name__)
META_KEY = "beam_speckle"  # checkpoint metadata: the stage's BeamSpeckleConfig as a dict
RENEW_DEPTH_SHARE = 0.03  # a hand-held probe's speckle: the tissue path (a share of the view's depth) over which it
# keeps 1/e of its coherence, chosen on real scanners' videos (docs/lab/lq2hq_fast.md, stop 41); the stage renews at
# this rate as far as its input's own speckle shows renewal (engines.speckle_renewal)
EDGE_PX = 2.0  # the fitted view's last pixels, where a pixel the input shows black is beyond its view, not fluid (the
# fit's edge runs up to a pixel beyond the echo: 1,950 px of a 1000×1386 phantom frame)
STILL_MM = 1e-3  # mm: a posed frame closer than this to the last one's plane has not left it (rounding, not a probe)


class NoFan(ValueError):
    """The frame's echo region is not a fan (sector) this stage can fit."""


class NoEcho(NoFan):
    """A (nearly) blank frame: nothing to fit, and nothing wrong — a node's warm-up frame, a frozen probe's black."""


@dataclass(frozen=True)
class Fan:
    """A fanned field of view (phased, curvilinear, or a linear array's trapezoid format) in pixel coordinates
    (x = column, y = row, pixel centres at integers): beams leave the apex at angles ``theta0``…``theta1`` (radians
    from straight down, left negative) and are sampled from radius ``r0`` to ``r1`` (pixels). The apex may lie above
    the frame (negative y). ``top`` / ``bottom``: the rows of a flat top or bottom edge (a trapezoid's face), if any.
    ``within_echo``: the frame shows image only within its echo's hull (a far field too dim to light the view's deep
    corners; ``fit_fan``)."""

    apex_x: float
    apex_y: float
    r0: float
    r1: float
    theta0: float
    theta1: float
    top: float | None = None
    bottom: float | None = None
    within_echo: bool = False

    def close_to(self, other, px: float = 1.5, rad: float = math.radians(0.5)) -> bool:
        """Within fitting noise of ``other``: the same probe, so the scan maps (and the speckle) stay as they are."""
        return (isinstance(other, Fan) and abs(self.apex_x - other.apex_x) <= px
                and abs(self.apex_y - other.apex_y) <= px
                and abs(self.r0 - other.r0) <= px and abs(self.r1 - other.r1) <= px
                and abs(self.theta0 - other.theta0) <= rad and abs(self.theta1 - other.theta1) <= rad
                and _same_edge(self.top, other.top, px) and _same_edge(self.bottom, other.bottom, px))

    @property
    def depth_px(self) -> float:
        """A beam's length in pixels."""
        return self.r1 - self.r0

    @property
    def flat_face(self) -> bool:
        """A flat top edge: a linear array's trapezoid format (or a sector cut by the frame's top)."""
        return self.top is not None

    @property
    def width_px(self) -> float:
        """The view's width across the beams in pixels, at mid-depth (the arc there)."""
        return (self.theta1 - self.theta0) * (self.r0 + 0.5 * self.depth_px)

    def polar(self, shape: tuple[int, int], rays: int, samples: int):
        """Every pixel's fractional ray and sample on a rays × samples grid over the fan, and its distance outside
        the fan in pixels (< 0 inside)."""
        ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
        dx, dy = xs - self.apex_x, ys - self.apex_y
        r, theta = np.hypot(dx, dy), np.arctan2(dx, dy)
        ray = (theta - self.theta0) / (self.theta1 - self.theta0) * (rays - 1)
        sample = (r - self.r0) / (self.r1 - self.r0) * (samples - 1)
        edges = [(self.theta0 - theta) * r, (theta - self.theta1) * r, r - self.r1, self.r0 - r]
        if self.top is not None:
            edges.append(self.top - ys)
        if self.bottom is not None:
            edges.append(ys - self.bottom)
        return ray.astype(np.float32), sample.astype(np.float32), np.maximum.reduce(edges)

    def grid_at(self, xs: np.ndarray, ys: np.ndarray, affine: np.ndarray, rays: int, samples: int,
                margins: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The (ray, sample) in margined planes of the points ``affine`` (2×3, float32) takes the pixels (xs, ys) to:
        the real-time path of anchored grain, so one cartToPolar and the constants folded."""
        (a, b, c), (d, e, f) = affine
        dx = a * xs + b * ys + (c - self.apex_x)
        dy = d * xs + e * ys + (f - self.apex_y)
        r, angle = cv2.cartToPolar(-dy, -dx)  # atan2(−dx, −dy) = θ + π in [0, 2π), θ from straight down: no wrap
        per_ray = (rays - 1) / (self.theta1 - self.theta0)
        per_sample = (samples - 1) / (self.r1 - self.r0)
        margin_samples, margin_rays = margins
        ray = angle * np.float32(per_ray) + np.float32(margin_rays - (self.theta0 + math.pi) * per_ray)
        sample = r * np.float32(per_sample) + np.float32(margin_samples - self.r0 * per_sample)
        return ray, sample


@dataclass(frozen=True)
class Band:
    """A linear array's field of view in pixel coordinates: parallel beams from column ``x0`` to ``x1``, sampled
    from row ``y0`` to ``y1``; ``within_echo`` as for a Fan."""

    x0: float
    x1: float
    y0: float
    y1: float
    within_echo: bool = False

    def close_to(self, other, px: float = 1.5) -> bool:
        return isinstance(other, Band) and max(abs(self.x0 - other.x0), abs(self.x1 - other.x1),
                                               abs(self.y0 - other.y0), abs(self.y1 - other.y1)) <= px

    @property
    def depth_px(self) -> float:
        """A beam's length in pixels."""
        return self.y1 - self.y0

    flat_face = True  # a linear array's face

    @property
    def width_px(self) -> float:
        """The view's width across the beams in pixels."""
        return self.x1 - self.x0

    def polar(self, shape: tuple[int, int], rays: int, samples: int):
        """Every pixel's fractional ray (column) and sample (row) on a rays × samples grid over the band, and its
        distance outside the band in pixels (< 0 inside)."""
        ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
        ray = (xs - self.x0) / (self.x1 - self.x0) * (rays - 1)
        sample = (ys - self.y0) / (self.y1 - self.y0) * (samples - 1)
        outside = np.maximum.reduce([self.x0 - xs, xs - self.x1, self.y0 - ys, ys - self.y1])
        return ray.astype(np.float32), sample.astype(np.float32), outside

    def grid_at(self, xs: np.ndarray, ys: np.ndarray, affine: np.ndarray, rays: int, samples: int,
                margins: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """As Fan.grid_at: the beams are columns, so the tissue's column and row on the grid."""
        (a, b, c), (d, e, f) = affine
        per_ray, per_sample = (rays - 1) / (self.x1 - self.x0), (samples - 1) / (self.y1 - self.y0)
        margin_samples, margin_rays = margins
        ray = (a * xs + b * ys + (c - self.x0)) * np.float32(per_ray) + np.float32(margin_rays)
        sample = (d * xs + e * ys + (f - self.y0)) * np.float32(per_sample) + np.float32(margin_samples)
        return ray, sample


def _same_edge(a: float | None, b: float | None, px: float) -> bool:
    return (a is None) == (b is None) and (a is None or abs(a - b) <= px)


# The net runs on a frame as sent while its beams are within this factor of config.net_depth_px: the LQ→HQ nets
# were trained on 256² views of 196–250 px beams (−10 % / +14 % of the default probe's 219).
RESAMPLE_BEYOND = 1.2
FLAT_EDGE = 0.25  # a hull's top or bottom row this share of its widest row wide is a flat edge, not an arc's crest
MIN_AGREEMENT = 0.9  # the fitted view must cover the echo region this well (intersection over union), or it is wrong
LEAN = 0.25  # a fan whose edges' mean angle from straight down exceeds this share of its opening is no probe's view:
# real views lean 0.00-0.03 (0.17 a linear array's slanted near field), fans fitted to crops filling the frame or to
# a screenshot's text around the image 0.65-1.00 (their beams from a corner of the frame)
DIM_FAR_FIELD = (0.98, 0.95)  # ... unless it covers this share of the echo and this share of the rest lies in the
# deeper half of its beams: a far field too dim to light the view's deep corners (a real cardiac sector, Philips EPIQ
# 7C, and a real linear array over an anechoic phantom, Sonoque: IoU 0.87-0.90, their excess 98 % deep), where a
# disc's best fan has 17 % of its excess near the apex
PIECE = 0.01  # a lit component this share of the largest one's area is a piece of the image (fluid across a view
# cuts its near field off: 3 % in a test); smaller ones beyond MARK_GAP px of the pieces' hull are marks drawn beside
# the view (a label's glyph, a depth tick, an orientation dot: 0.05-0.2 % of a sector at 256-1386 px)
MARK_GAP = 2
CUT_PIECE = 0.001  # ... and one this share that the frame's edge cuts is image the frame cropped (echo in a corner of
# a real cropped view, Clarius: 0.24 %; a depth tick at the frame's edge 0.01 %)


def fit_fan(frame: np.ndarray, level: float = ECHO_LEVEL) -> Fan | Band:
    """The field of view of a frame (float, (H, W)), from the convex hull of its pixels with echo — the hull,
    because fluid can render black inside it. Its two sides are fitted as lines over the rows between the top and
    the widest row (below that a fan's sides follow its bottom arc): sides that meet make a Fan, its apex where they
    meet; vertical parallel sides a Band (a linear array). A fit that does not cover the echo region (IoU below
    MIN_AGREEMENT) is refused: a frame gets no grain rather than grain from a wrong geometry — unless all it adds
    to the echo lies deep in its beams (DIM_FAR_FIELD): a scanner's far field fades before the view's corners, so the
    view is kept ``within_echo``, its image ending where the echo does."""
    lit, pieces = image_echo((frame > level).astype(np.uint8))
    hull = echo_hull(lit)
    rows = np.flatnonzero(hull.any(axis=1))
    left = np.argmax(hull, axis=1).astype(np.float64) - 0.5  # a lit pixel's centre is inside: its edge is ½ px out
    right = hull.shape[1] - 1 - np.argmax(hull[:, ::-1], axis=1).astype(np.float64) + 0.5
    width = (right - left)[rows]
    top, widest = rows[0], rows[np.flatnonzero(width >= width.max() - 1)[-1]]  # the corners' row (a fan's widest)
    span = rows[(rows >= top + 0.15 * (widest - top)) & (rows <= top + 0.9 * (widest - top))]
    if len(span) < 8:
        raise NoFan(f"the echo region's sides are too short to fit a sector ({len(span)} rows)")
    # rows where the echo runs off the frame's side show the frame's edge, not the view's: a sector wider than the
    # frame (a zoomed or cropped phased view) keeps its sides in the rows above. A side on the frame's edge all along
    # (a linear view as wide as the frame) is that edge.
    span_l, span_r = span[left[span] > 0], span[right[span] < hull.shape[1] - 1]
    span_l, span_r = (s if len(s) >= 8 else span for s in (span_l, span_r))
    span_l, span_r = _straight(span_l, left, 1.0), _straight(span_r, right, -1.0)
    slope_l, cut_l = np.polyfit(span_l, left[span_l], 1)
    slope_r, cut_r = np.polyfit(span_r, right[span_r], 1)
    if slope_r - slope_l < 0.05:
        if max(abs(slope_l), abs(slope_r)) > 0.05:
            raise NoFan("the echo region's sides are parallel but slanted (a steered linear frame): not modelled")
        view = Band(float(left[span_l].mean()), float(right[span_r].mean()), float(rows[0] - 0.5), float(rows[-1] + 0.5))
    else:
        theta0, theta1 = math.atan(slope_l), math.atan(slope_r)
        if abs(theta0 + theta1) > LEAN * (theta1 - theta0):
            raise NoFan(f"the fitted sector leans to one side (its edges at {math.degrees(theta0):.0f}° and "
                        f"{math.degrees(theta1):.0f}° from straight down): no probe's view does (an image cropped "
                        "inside its view, or marks touching it?)")
        apex_y = (cut_l - cut_r) / (slope_r - slope_l)
        apex_x = cut_l + slope_l * apex_y
        ys, xs = np.nonzero(hull)
        radius = np.hypot(xs - apex_x, ys - apex_y)
        r0 = radius.min()
        top, bottom = (_edge(lit, hull, rows, width, end) for end in (0, -1))
        if top != "flat":  # a near arc (a sector's, a curved array's face): the hull's chord across it is nearer the
            # apex than the arc (4 px at a 1000-px sector's 27-px arc, where the stage lit rows the probe shows black);
            # the echo's nearest pixel is on it
            ys, xs = np.nonzero(lit & _near(pieces))  # not a mark inside the view's hull (a dot by a curved face)
            r0 = np.hypot(xs - apex_x, ys - apex_y).min() - 0.5
        view = Fan(float(apex_x), float(apex_y), float(r0), float(radius.max() + 0.5),
                   float(theta0), float(theta1),
                   float(rows[0] - 0.5) if top == "flat" else None, float(rows[-1] + 0.5) if bottom == "flat" else None)
    _, depth, outside = view.polar(hull.shape, 2, 2)  # depth: 0 at the beams' start, 1 at their end
    inside, echo = outside <= 0, hull > 0
    agreement = (inside & echo).sum() / max((inside | echo).sum(), 1)
    if agreement >= MIN_AGREEMENT:
        return view
    beyond = inside & ~echo
    covered, deep = DIM_FAR_FIELD
    if (inside & echo).sum() >= covered * echo.sum() and (depth[beyond] > 0.5).mean() >= deep:
        return replace(view, within_echo=True)
    raise NoFan(f"no fan or band fits the echo region (the best covers it at IoU {agreement:.2f})")


def _straight(rows: np.ndarray, side: np.ndarray, inward: float) -> np.ndarray:
    """The rows, from the top of ``rows``, over which a side of the echo region runs straight. A sector whose
    corners the frame or the display cut off shows its far arc below its straight sides (a real cardiac view,
    SonoSite: fitted over all rows its sides made a narrow fan from an apex far above, IoU 0.88, refused); the sides
    are the lines above that bend. ``inward``: +1 for the left side, −1 for the right."""
    while len(rows) > 16:
        slope, cut = np.polyfit(rows, side[rows], 1)
        bend = inward * (side[rows] - (slope * rows + cut))
        if bend[-len(rows) // 4:].mean() < 0.5:  # its last quarter on the line: straight all along
            return rows
        rows = rows[: int(len(rows) * 0.9)]
    return rows


def image_echo(lit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pixels with echo (``lit``, uint8) that belong to the image — within MARK_GAP of the convex hull of its
    pieces — and those pieces (``image_pieces``). A simulator or a scanner draws labels, depth ticks and an
    orientation dot beside the view; lit, they joined the hull, and a sector with a label in a corner was refused,
    one with labels in all four fitted as a band over the whole frame (stop 48)."""
    pieces = image_pieces(lit)
    return lit & _near(echo_hull(pieces)), pieces


def image_pieces(lit: np.ndarray) -> np.ndarray:
    """The connected components of ``lit`` (uint8) that are pieces of the image: at least PIECE of the largest
    one's area, or CUT_PIECE where the frame's edge cuts them (uint8, 1 on them)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(lit, connectivity=8)
    if n <= 2:
        return lit
    areas = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
    x, y, w, h = (stats[1:, k] for k in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT))
    cut = (x == 0) | (y == 0) | (x + w == lit.shape[1]) | (y + h == lit.shape[0])
    share = areas / areas.max()
    return np.isin(labels, 1 + np.flatnonzero((share >= PIECE) | (cut & (share >= CUT_PIECE)))).astype(np.uint8)


def _near(mask: np.ndarray) -> np.ndarray:
    return cv2.dilate(mask, np.ones((2 * MARK_GAP + 1,) * 2, np.uint8))


def echo_hull(lit: np.ndarray) -> np.ndarray:
    """The convex hull (uint8, 1 inside) of a frame's pixels with echo (``lit``, uint8)."""
    points = cv2.findNonZero(lit)
    if points is None or len(points) < 100:
        raise NoEcho("no imaging sector: fewer than 100 pixels with echo")
    hull = np.zeros_like(lit)
    cv2.fillConvexPoly(hull, cv2.convexHull(points), 1)
    return hull


def outside_of(mask: np.ndarray) -> np.ndarray:
    """Each pixel's distance outside ``mask`` (uint8) in pixels, ≤ 0 inside it (its edge pixels 0), as ``polar``
    gives it for a view."""
    out = cv2.distanceTransform(1 - mask, cv2.DIST_L2, 3)
    depth = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
    return np.where(mask > 0, 1.0 - depth, out).astype(np.float32)


def _edge(lit: np.ndarray, hull: np.ndarray, rows: np.ndarray, width: np.ndarray, end: int) -> str | None:
    """What the echo region's top (``end`` 0) or bottom (−1) is: "flat" (a trapezoid's face: its hull's edge row is
    wide and echo fills it), "arc" (wide but empty between its ends: the hull's chord across a curved face), or None
    (narrow: a sector's apex or a fan's bottom arc)."""
    if width[end] < FLAT_EDGE * width.max():
        return None
    band = rows[:3] if end == 0 else rows[-3:]
    span = hull[rows[end]] > 0
    filled = lit[band].any(axis=0)[span].mean()
    return "flat" if filled >= 0.5 else "arc"


@dataclass(frozen=True)
class BeamSpeckleConfig:
    """What a target domain's speckle is made of, in the scanner's own terms. Defaults: the phantom's HQ
    acquisition (usnst_stream.phantom.HQ: 256 rays, 640 samples, PSF 0.9 ray × 0.25 mm, 55 dB shown) —
    ``offline.speckle_fit`` measures the widths and the contrast from target frames instead."""

    rays: int = HQ_RAYS
    samples: int = HQ_SAMPLES
    lateral_sigma: float = HQ_LATERAL_SIGMA_RAYS  # PSF σ across beams, in rays
    axial_sigma: float = HQ_AXIAL_SIGMA_SAMPLES  # PSF σ along a beam, in samples
    contrast: float = GREY_PER_NEPER_HQ  # grey (0–1) per neper of envelope
    base_sigma: float = 1.5  # px: the net's output is low-passed by this before the grain is added (its own grain out)
    detail: float = 0.0  # share of the net's own fine texture (output − base) kept: where LQ and HQ share scatterers
    # it carries HQ's own speckle, which whole-frame SSIM rewards (0.7: SSIM 0.618 → 0.641 for lq2hq_fast)
    level: float = 0.0  # grey (0–1) added inside the fan: a net that sits above or below the target's tissue brightness
    # (a squared-error base: +7 grey levels) is brought to it, as a scanner's gain knob would (fitted: --fit-level)
    mean_shown: bool = False  # the grain is added under the display's clipping so the mean grey shown is the net's: in
    # near-black fluid (and near-white bone) grain added on top and clipped brightens (darkens) the mean, an even
    # grey grain where a scanner's is dark and sparse (a cue a whole-sector classifier reads)
    grey_curve: tuple = ()  # 256 mean greys shown (0–1) for the base's grey levels 0…255, in place of base + level:
    # a squared-error net is not calibrated at its dark end (its fluid shows brighter than the target's:
    # docs/lab/lq2hq_fast.md), so the mean the target shows at each base grey is fitted (--fit-curve, with mean_shown:
    # the curve is what the display shows under the grain); empty: none
    net_depth_px: float = 0.0  # a beam's length in pixels in the frames the net was trained at (0: unknown). A frame
    # whose beams are more than RESAMPLE_BEYOND times longer or shorter is resampled to it for the net, so the net
    # sees anatomy and input speckle at the scale it learned, whatever size a simulator renders at
    sample_mm: float = 0.0  # mm per sample along a beam in the frames the widths were fitted on (0: unknown). A
    # scanner's pulse has a length in mm, whatever the depth shown: for a frame whose pose or spacing (meta.spacing_mm)
    # gives its pixel size the axial width is kept in mm (a 50 mm linear view has 2.4 times finer samples than the 120 mm sector)

    def __post_init__(self):
        check_config(self, {"rays": (2, 4096), "samples": (2, 8192), "lateral_sigma": (0, 64), "axial_sigma": (0, 64),
                            "contrast": (0, 10), "base_sigma": (0, 64), "detail": (0, 1), "level": (-1, 1),
                            "sample_mm": (0, 100), "net_depth_px": (0, 1 << 16)})
        if self.rays * self.samples > 1 << 24:  # two float planes of this size per frame
            raise ValueError(f"beam speckle's polar grid of {self.rays} × {self.samples} is over 2^24 points")
        if min(self.lateral_sigma, self.axial_sigma) <= 0:
            raise ValueError("beam speckle PSF widths must be > 0")
        object.__setattr__(self, "grey_curve", tuple(float(g) for g in self.grey_curve))  # as stored: a list
        if self.grey_curve:
            curve = np.asarray(self.grey_curve, np.float64)
            if curve.shape != (256,) or not np.all(np.isfinite(curve)) or curve.min() < 0 or curve.max() > 1:
                raise ValueError("beam speckle's grey curve needs 256 greys in 0…1")
            if np.any(np.diff(curve) < 0):
                raise ValueError("beam speckle's grey curve must not fall: a brighter base never shows darker")
            if self.level:
                raise ValueError("beam speckle: a grey curve takes the place of the level; give one or the other")
            if not self.mean_shown:
                raise ValueError("beam speckle: a grey curve is the mean grey shown, so it needs mean_shown (the grain "
                                 "added under the display's clipping), or the clipped grain would move it")

    def to_dict(self) -> dict:
        return {**asdict(self), "grey_curve": list(self.grey_curve)}  # as JSON (ONNX and TensorRT records) has it

    @classmethod
    def from_dict(cls, d: dict) -> "BeamSpeckleConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def pixel_mm(pose: np.ndarray | None, spacing_mm: tuple[float, float] | None) -> float | None:
    """A frame's pixel size in mm (the geometric mean of its column and row spacing): from its pose when the sender
    gave one, else from the spacing it gave, else None (unknown)."""
    if pose is not None:
        return math.sqrt(np.linalg.norm(pose[:3, 0]) * np.linalg.norm(pose[:3, 1]))
    if spacing_mm is not None:
        return math.sqrt(spacing_mm[0] * spacing_mm[1])
    return None


def echo_region(frame: np.ndarray) -> np.ndarray:
    """1 where the frame has echo, grown by 2 px (as engines.geometry.echo_region with reach 2)."""
    return cv2.dilate((frame > ECHO_LEVEL).astype(np.uint8), np.ones((5, 5), np.uint8))


class Resampled:
    """A frame at the scale its net was trained at (``frame``; ``view``: its image region there), and the way back
    (``back``). Both average within the image region: by plain area and linear enlargement the view's last pixels
    took in the black beyond it, and the net, seeing a dark edge, drew one that the way back widened to a 4-px rim at
    1000×1386 (stop 44)."""

    def __init__(self, frame: np.ndarray, region: np.ndarray, scale: float):
        self.shape, self._source, self._region = frame.shape, frame, region
        height, width = frame.shape
        size = (max(8, round(width / scale)), max(8, round(height / scale)))
        self.shrunk = scale > 1
        self.view = cv2.resize(region, size, interpolation=cv2.INTER_AREA)
        if self.shrunk:
            self._lit = (self.view >= 0.5).astype(np.float32)
            weight = cv2.resize(self._lit, (width, height), interpolation=cv2.INTER_LINEAR)
            self._per_weight = np.where(weight > 1e-3, 1.0 / np.maximum(weight, 1e-3), 0.0).astype(np.float32)
            small = cv2.resize(frame * region, size, interpolation=cv2.INTER_AREA)
            self.frame = np.where(self._lit > 0, small / np.maximum(self.view, 1e-3), 0.0).astype(np.float32)
        else:
            self.frame = cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)

    def back(self, *images: np.ndarray) -> list[np.ndarray]:
        """``images``, at the net's scale, at the frame's size."""
        height, width = self.shape
        if not self.shrunk:  # shrinking back by area: no aliased net texture
            return [cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA) for image in images]
        return [cv2.resize(image * self._lit, (width, height), interpolation=cv2.INTER_LINEAR) * self._per_weight
                for image in images]

    def shrunk_away(self) -> np.ndarray:
        """The input's fine texture that shrinking the frame for the net took away: the frame less its shrunk copy
        brought back, inside its image region. At its trained scale the net's detail passes on the input speckle
        LQ shares with HQ; on a shrunk frame that speckle is finer than the net sees, and the stage takes it from the
        input at the same share (docs/lab/lq2hq_fast.md, stop 44: at 1000×1386 the grain's Nakagami m and strength come
        to HQ's)."""
        return ((self._source - self.back(self.frame)[0]) * self._region).astype(np.float32)


def _gaussian_taps(sigma: float) -> np.ndarray:
    k = cv2.getGaussianKernel(2 * max(1, math.ceil(4 * sigma)) + 1, sigma, cv2.CV_32F)
    return k[:, 0]


class BeamSpeckle:
    """The stage: ``apply(styled, frame, planes)`` with two ``plane_shape`` standard-normal planes, or none for
    no grain (noise "off": the low-passed output alone). ``anchored``: the planes are the tissue's scatterers,
    larger than the fan by a margin (a quarter of the rays and an eighth of the samples each side, so tissue that
    slides into view brings its own; farther out they repeat), read where each frame's tissue was at the start,
    and renewed in part as the tissue moves (``renewed``; ``renew``: None for a hand-held scanner's renewal as far
    as the input's own speckle shows it, else a fixed path of 1/e coherence as a share of the view's depth, 0 for
    scatterers that never change; ``seed``: where the fresh ones are taken)."""

    def __init__(self, config: BeamSpeckleConfig = BeamSpeckleConfig(), anchored: bool = False,
                 texture: ScannerTexture | None = None, renew: float | None = None, seed: int = 0):
        if texture is not None and config.mean_shown:
            raise ValueError("beam speckle: mean_shown is for the formed grain; a scanner texture brings its own "
                             "strength at each grey level")
        self.config = config
        self.texture = texture  # a real scanner's texture in place of the formed grain (engines.scanner_texture)
        self.margins = (config.samples // 8, config.rays // 4) if anchored else (0, 0)
        self.motion = TissueMotion() if anchored else None
        self._anchored: tuple = (None, None, None)  # (screen maps, motion) → the maps into the tissue's planes
        self._pixels: np.ndarray | None = None  # every pixel's (row, column), kept per frame size
        self.lateral = _gaussian_taps(config.lateral_sigma)
        self._use_axial(config.axial_sigma)
        self.fan: Fan | None = None
        self._maps: tuple[np.ndarray, np.ndarray] | None = None
        self._rings: tuple[np.ndarray, np.ndarray] = (np.empty(0, int), np.empty(0, int))  # pixels outside, inside
        self._inside: np.ndarray | None = None  # 1 inside the fan
        self._shape: tuple[int, int] | None = None
        self.skipped = 0  # frames without a fan: passed through as the net made them
        self._warned = False
        self._log_r: tuple = (None, None)  # the last plane object and its log-envelope (the formed grain)
        self._grain: np.ndarray | None = None  # the last grain, and the (plane, maps) objects it was made from
        self._grain_from: tuple = (None, None, None)
        self._under: np.ndarray | None = None  # mean shown → level under the grain, for config.mean_shown
        self._under_from = None  # the scan maps it was measured for
        self._curve = None if not config.grey_curve else np.interp(  # the grey curve at 1/4096 grey, for lookup
            np.linspace(0, 1, 4096), np.linspace(0, 1, 256), config.grey_curve).astype(np.float32)
        self.renew, self._rng = renew, np.random.default_rng(seed)
        self.renewal = SpeckleRenewal() if anchored else None  # how fast the input's own speckle renews
        self._motion_starts = -1  # the motion's restarts the renewal has seen (a new view: its frames are forgotten)
        self._field: list | None = None  # anchored: the scatterers now, the planes they began as, the motion they had
        self._field_from: tuple = (None, None, None)
        self._squares: SquareCycle | None = None  # anchored scanner texture: its squares' renewal
        self._texture, self._texture_from = None, (None, None, None)  # the quilted plane, its (noise, fan, turns)

    def _use_axial(self, sigma: float) -> None:
        """The PSF's axial width in samples; a change makes the log-envelope and the grain anew."""
        self.axial_sigma = sigma
        self.axial = _gaussian_taps(sigma)
        # blurring unit white noise leaves variance Σk²: divided out so the envelope's power has mean 1
        self.energy = float((self.lateral ** 2).sum() * (self.axial ** 2).sum())
        self._log_r, self._grain, self._grain_from = (None, None), None, (None, None, None)

    def _follow_spacing(self, px_mm: float) -> None:
        """Keep the axial width in mm on a frame whose pixel size (mm) its sender gave (``config.sample_mm`` known)."""
        sigma = self.config.axial_sigma * self.config.sample_mm / (self.fan.depth_px * px_mm / (self.config.samples - 1))
        if abs(sigma - self.axial_sigma) > 1e-3 * self.axial_sigma:
            self._use_axial(float(np.clip(sigma, 0.05, 64.0)))

    @property
    def plane_shape(self) -> tuple[int, int, int, int]:
        margin_samples, margin_rays = self.margins
        return (1, 1, self.config.samples + 2 * margin_samples, self.config.rays + 2 * margin_rays)

    def log_envelope(self, re: np.ndarray, im: np.ndarray) -> np.ndarray:
        """Centred ln R on the polar grid: R² = (a² + b²)/2 is exponential with mean 1, so E[ln R] = −γ/2."""
        blur = lambda p: cv2.sepFilter2D(p.astype(np.float32), -1, self.lateral, self.axial, borderType=cv2.BORDER_REFLECT)
        a, b = blur(re), blur(im)
        power = (a * a + b * b) * (0.5 / self.energy)
        return 0.5 * np.log(power + 1e-12) + EULER_GAMMA / 2

    def grain(self, maps: tuple[np.ndarray, np.ndarray], planes: list[np.ndarray]) -> np.ndarray:
        """The grey levels the grain adds to each pixel: the polar log-envelope (or texture), scan-converted, times
        the contrast. With fixed noise the planes and the maps stay the same objects frame after frame, so the grain
        is kept (the objects themselves are held, so a new plane can never pass for an old one)."""
        last_plane, last_maps, last_turns = self._grain_from
        if self._grain is not None and last_plane is planes[0] and last_maps is maps and last_turns == self._turns:
            return self._grain
        if self.texture is None:
            if self._log_r[0] is not planes[0]:
                self._log_r = (planes[0], self.log_envelope(np.squeeze(planes[0]), np.squeeze(planes[1])))
            polar = self._log_r[1]
        else:
            polar = self.texture_plane(planes[0])
        border = cv2.BORDER_WRAP if self.motion is not None else cv2.BORDER_CONSTANT
        contrast = 1.0 if self.texture is not None else self.config.contrast
        self._grain = contrast * cv2.remap(polar, *maps, cv2.INTER_LINEAR, borderMode=border, borderValue=0)
        self._grain_from = (planes[0], maps, self._turns)
        return self._grain

    @property
    def _turns(self) -> int | None:
        """How often the anchored texture's squares have changed (None: none kept): part of the caches' keys."""
        return None if self._squares is None else self._squares.turns

    def texture_plane(self, noise: np.ndarray) -> np.ndarray:
        """The scanner texture quilted on the polar grid: its squares picked by the noise plane, quilted anew for
        another view (the texture's scale follows the view) or, anchored, as its squares renew (``SquareCycle``)."""
        last_noise, last_fan, last_turns = self._texture_from
        if last_noise is noise and last_fan is self.fan and last_turns == self._turns:
            return self._texture
        grid = self.plane_shape[2:]
        _, tiles = self.texture.tiles(self.fan, grid, self.config.rays, self.config.samples)
        choice = ndtr(np.ravel(noise)[:tiles])
        if self.motion is None:
            self._texture = self.texture.plane(choice, self.fan, grid, self.config.rays, self.config.samples)
        else:
            if self._squares is None or self._texture_from[0] is not noise:
                self._squares = SquareCycle(choice, self._rng)  # a new stream: its first squares as before
            elif self._squares.now.size != tiles:  # a view of another size: fresh squares (not the first ones again)
                self._squares = SquareCycle(self._rng.random(tiles), self._rng)
            squares = self._squares  # a view fitted again, the same size: its squares go on renewing
            self._texture = self.texture.plane(squares.now, self.fan, grid, self.config.rays, self.config.samples,
                                               squares.then, squares.fade)
        self._texture_from = (noise, self.fan, self._turns)
        return self._texture

    def tissue_maps(self, maps: tuple[np.ndarray, np.ndarray], frame: np.ndarray,
                    pose: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Anchored: every pixel's fractional (ray, sample) in the margined planes at the point where its tissue was
        in the reference frame (the same objects while the motion stays, so the grain is kept). The motion comes
        from the frame's ``pose`` when the sender gives one, else it is estimated from the frames."""
        if pose is None:  # only the view: what a display draws beside it (labels, a dot) stays on the screen and
            frame = frame * self._inside  # pulled the estimate towards no motion (stop 48)
        to_reference = self.motion.update(frame, pose, flat_face=self.fan.flat_face)
        if self.renew is None and pose is None:
            if self.motion.starts != self._motion_starts:
                self.renewal.clear()
                self._motion_starts = self.motion.starts
            self.renewal.update(frame, to_reference)
        if self._anchored[0] is maps and self._anchored[1] is to_reference:
            return self._anchored[2]
        if self._pixels is None or self._pixels[0].shape != frame.shape:
            self._pixels = np.mgrid[0:frame.shape[0], 0:frame.shape[1]].astype(np.float32)
        ys, xs = self._pixels
        grid = self.fan.grid_at(xs, ys, to_reference[:2].astype(np.float32), self.config.rays, self.config.samples,
                                self.margins)
        self._anchored = (maps, to_reference, grid)
        return grid

    def renewed(self, planes: list[np.ndarray], shape: tuple[int, int], posed: bool) -> list[np.ndarray]:
        """The anchored scatterers after this frame's motion. A new reference (another view, a probe off the slice,
        poses begun or ended) replaces them all. Placed by poses they stay while the probe moves in plane (the
        simulator's tissue is fixed in its world, and a pose says all the probe did) and renew as it leaves its
        plane: coherence exp(−step / SLICE_MM) for a frame ``step`` mm off the last one's plane, the slice thickness
        as the scale (a tilting probe images other scatterers gradually, not all at once). Estimated from the
        frames, a share is replaced in proportion to the path the tissue moved since the last frame (its centre's,
        in reference pixels), so their coherence falls as exp(−path · rate): a hand-held probe's speckle renews as
        the hand moves it (tilting out of plane, pressing; 1/e over ``RENEW_DEPTH_SHARE`` of the depth), a
        simulator's with scatterers fixed in its world does not, and the input's own speckle says which
        (``engines.speckle_renewal``: the rate is the scanner's times the share the input shows; ``renew``, when
        set, fixes the path of 1/e at that share of the depth instead). A still probe keeps them all: a paused
        output stays still. The fresh field is the stream's own planes circularly shifted by a random offset: white
        noise shifted is independent of itself, and costs no new draw (drawing two planes costs ~6 ms; the mix ~1
        ms, and the log-envelope made anew ~2 ms, per moving frame). A scanner texture's squares cannot be mixed so; they move on by the coherence lost
        (−ln of the share kept) over ``SQUARE_LIFE`` of their cycle (``SquareCycle``), and the planes stay."""
        to_reference, starts = self.motion.to_reference, self.motion.starts
        if self._field is None or self._field_from[0] is not planes[0]:  # a new stream's planes
            self._field, self._field_from = planes, (planes[0], to_reference, starts)
            return planes
        _, last, last_starts = self._field_from
        self._field_from = (planes[0], to_reference, starts)
        if starts != last_starts:
            keep = 0.0
        elif posed:
            if self.motion.off_plane_step_mm <= STILL_MM:
                return self._field
            keep = math.exp(-self.motion.off_plane_step_mm / SLICE_MM)
        elif to_reference is last:  # the motion kept: the tissue did not move
            return self._field
        else:
            h, w = shape
            centre = np.array([(w - 1) / 2, (h - 1) / 2, 1.0])
            path = float(np.hypot(*((to_reference - last) @ centre)[:2]))
            rate = 1.0 / ((self.renew or RENEW_DEPTH_SHARE) * self.fan.depth_px)
            if self.renew is None:
                rate *= self.renewal.shown(rate)
            keep = math.exp(-min(path * rate, 30.0))
            if keep == 1.0:  # nothing renewed (the input's speckle is not seen to renew): the grain is kept
                return self._field
        if self.texture is not None:  # a scanner's texture: its squares renew in turn over the same path
            if self._squares is not None:
                self._squares.advance(-math.log(keep) / SQUARE_LIFE) if keep > 0 else self._squares.restart()
            return planes
        fresh = math.sqrt(1.0 - keep * keep)
        rows, cols = planes[0].shape[-2:]
        offset = (int(self._rng.integers(1, rows)), int(self._rng.integers(1, cols)))
        self._field = [(keep * f + fresh * np.roll(p, offset, axis=(-2, -1))).astype(np.float32)
                       for f, p in zip(self._field, planes)]
        return self._field

    def scan_maps(self, fan: Fan, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """cv2.remap maps: every pixel's fractional (ray, sample) on the polar grid; −1 outside the fan."""
        return self._remap_maps(*fan.polar(shape, self.config.rays, self.config.samples)[:2])

    def _remap_maps(self, ray: np.ndarray, sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outside = (ray < 0) | (ray > self.config.rays - 1) | (sample < 0) | (sample > self.config.samples - 1)
        ray[outside], sample[outside] = -1, -1
        return ray, sample

    def _maps_for(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The scan maps of this frame's fan. Fitting costs ~10 ms at 512², so a frame is only checked against the
        fan it had: no echo in a ring 2–4 px outside it, echo in most of a ring just inside. A frame that fails the
        check is fitted again, and the maps change only if the new fan is beyond fitting noise of the old (the image of
        a view that ends with its echo is made anew from the new frame's echo)."""
        lit = frame > ECHO_LEVEL
        had = self._maps is not None and self._shape == frame.shape
        if had:
            guard, rim = self._rings  # a view that fills the frame has no ring outside it: nothing there to light
            dark_outside = guard.size == 0 or lit.ravel()[guard].mean() < 0.02
            if dark_outside and rim.size and lit.ravel()[rim].mean() > 0.5:
                return self._maps
        try:
            fan = fit_fan(frame)
        except NoFan as exc:
            # Echo only within the view it had, in a shape no view fits: the probe lost contact along part of its
            # face, or a shadow reaches its edge. The view is the probe's and stays (a real linear-array video showed
            # such frames without grain between frames with it: a flash). A blank frame stays black.
            if had and dark_outside and not isinstance(exc, NoEcho):
                return self._maps
            raise
        same_beams = self._maps is not None and self._shape == frame.shape and fan.close_to(self.fan)
        if same_beams and not (fan.within_echo or self.fan.within_echo):
            return self._maps
        if same_beams:  # the beams stay; an image that ends with the echo follows it (a gain raised or lowered)
            self.fan = replace(self.fan, within_echo=fan.within_echo)
            outside = self.fan.polar(frame.shape, 2, 2)[2]
        else:
            self.fan, self._shape = fan, frame.shape
            ray, sample, outside = fan.polar(frame.shape, self.config.rays, self.config.samples)
            self._maps = self._remap_maps(ray, sample)
        if self.fan.within_echo:  # its deep corners are beyond the echo: the image ends where the echo does
            outside = np.maximum(outside, outside_of(echo_hull(image_echo(lit.astype(np.uint8))[0])))
        self._inside = (outside <= 0.0).astype(np.float32)
        outside = outside.ravel()
        self._edge = np.flatnonzero((outside > -EDGE_PX) & (outside <= 0.0))
        self._beyond = np.flatnonzero(outside > 0.0)  # where what the sender draws beside the view is shown as sent
        self._rings = (np.flatnonzero((outside > 2) & (outside <= 4)), np.flatnonzero((outside >= -4) & (outside < -2)))
        return self._maps

    def image(self, frame: np.ndarray) -> np.ndarray:
        """Where ``frame`` shows image in the view last fitted (float, 1 inside): the view, less the pixels of its last
        EDGE_PX where the frame has no echo. The fit's edge runs up to a pixel beyond the echo (it is drawn around
        the lit pixels' centres), and the stage is not to draw grain where the simulator shows black beyond its view;
        black inside the view (anechoic fluid) is image."""
        region = self._inside.copy()
        at_edge = self._edge[frame.reshape(-1)[self._edge] <= ECHO_LEVEL]
        region.reshape(-1)[at_edge] = 0.0
        return region

    def net_scale(self, frame: np.ndarray) -> tuple[float | None, tuple[np.ndarray, np.ndarray] | None]:
        """How many times longer this frame's beams are than those the net was trained on (``config.net_depth_px``),
        or None when the net takes the frame as sent: within RESAMPLE_BEYOND of them, no depth declared, or no view
        to measure (which ``apply`` then counts); and the frame's scan maps where its view was checked here, for
        ``apply`` to take instead of checking the frame again (~1 ms at 1000²), else None."""
        if not self.config.net_depth_px:
            return None, None
        try:
            maps = self._maps_for(frame)
        except NoFan:
            return None, None
        scale = self.fan.depth_px / self.config.net_depth_px
        return (None if 1 / RESAMPLE_BEYOND <= scale <= RESAMPLE_BEYOND else scale), maps

    def base(self, styled: np.ndarray, region: np.ndarray) -> np.ndarray:
        """The net's output low-passed inside ``region`` only (normalised convolution: nothing from beyond the image's
        edge darkens its last pixels)."""
        sigma = self.config.base_sigma
        if sigma == 0:
            return styled
        m = region.astype(np.float32)
        num = cv2.GaussianBlur(styled.astype(np.float32) * m, (0, 0), sigma)
        den = cv2.GaussianBlur(m, (0, 0), sigma)
        return np.where(m > 0, num / np.maximum(den, 1e-6), 0.0).astype(np.float32)

    def apply(self, styled: np.ndarray, frame: np.ndarray, planes: list[np.ndarray] | None,
              pose: np.ndarray | None = None, base: np.ndarray | None = None,
              maps: tuple[np.ndarray, np.ndarray] | None = None, region: np.ndarray | None = None,
              spacing_mm: tuple[float, float] | None = None) -> np.ndarray:
        """``styled``: the net's output for ``frame``; ``planes``: the two polar noise planes, or None (noise off);
        ``pose``: the frame's 4×4 image-to-world pose, if the sender gave one (it places anchored grain, and its
        pixel spacing keeps the axial grain's width in mm); ``spacing_mm``: the frame's (row, column) pixel spacing
        when the sender gave it without a pose (the width in mm, no placement); ``base``: the
        low-passed output when the caller made it (at the net's scale), else made here; ``maps``: the frame's scan maps
        when the caller has just checked its view (``net_scale``), else checked here; ``region``: the frame's image
        (below) when the caller has just made it with those maps, else made here.
        One composition for every noise mode and every frame,

            out = mean + detail · (styled − base) + grain,   black outside the image,

        ``mean`` the base through the grey curve where the model has one, else base + level (``mean_of``; with
        ``mean_shown`` the grain goes under the display's clipping, so that ``mean`` is what shows on average); the
        grain zero with noise off, and for a frame with no fan to fit (a linear probe, a blank frame: counted in
        ``skipped``), which is then black outside its echo region instead. The image (``image``): the fitted view less
        the pixels at its edge where the frame has no echo; the base is low-passed within it, so nothing from
        beyond the view's edge darkens its last pixels (until stop 44, the echo region grown by 2 px did: a dark rim
        along the sector, its last pixel 101 grey where HQ's is 120 at 256², 4–6 px wide at 1000×1386), and pixels
        the fit's view takes in beyond the input's echo stay black. What the sender drew beside the view (lit
        pixels beyond it: labels, depth ticks, an orientation dot) is shown as sent."""
        try:
            maps = self._maps_for(frame) if maps is None else maps
        except NoFan as exc:
            maps = None
            self.skipped += 1
            if not isinstance(exc, NoEcho) and not self._warned:  # a blank frame is routine, not news
                self._warned = True
                log.warning("beam speckle: %s; such frames get no grain", exc)
        if region is None or maps is None:
            region = echo_region(frame) if maps is None else self.image(frame)  # no view: black outside the echo
        base = self.base(styled, region) if base is None else base
        mean = self.mean_of(base)
        out = mean + self.config.detail * (styled - base)
        if self.texture is not None:
            out = self.texture.shown(out)
        if maps is None:
            return (np.clip(out, 0.0, 1.0) * region).astype(np.float32)
        px_mm = pixel_mm(pose, spacing_mm)
        if px_mm is not None and self.config.sample_mm > 0:
            self._follow_spacing(px_mm)
        if self.motion is not None:
            maps = self.tissue_maps(maps, frame, pose)
            if planes and self.renew != 0:
                planes = self.renewed(planes, frame.shape, pose is not None)
        if planes:
            grain = self.grain(maps, planes)
            if self.texture is not None:
                grain = self.texture.strength(out) * grain
            elif self.config.mean_shown:
                out = self.level_under_grain(mean, grain) + (out - mean)
            out = out + grain
        shown = (np.clip(out, 0.0, 1.0) * region).astype(np.float32)  # black outside the image, as a scanner's ...
        beside = self._beyond[frame.reshape(-1)[self._beyond] > ECHO_LEVEL]  # ... but for what the display drew
        shown.reshape(-1)[beside] = frame.reshape(-1)[beside]  # beside the view (labels, ticks): as it was sent
        return shown

    def mean_of(self, base: np.ndarray) -> np.ndarray:
        """The mean grey the display is to show for the low-passed output: the fitted grey curve where the model
        has one, else the base shifted by the level."""
        if self._curve is None:
            return base + self.config.level
        return self._curve[np.clip(base * 4095 + 0.5, 0, 4095).astype(np.int32)]

    def level_under_grain(self, mean: np.ndarray, grain: np.ndarray) -> np.ndarray:
        """The level L to add ``grain`` G to so that the display shows ``mean`` on average: E[clip(L + G, 0, 1)] =
        mean, from a table of that expectation over G's quantiles inside the view (scan conversion narrows the
        log-Rayleigh law, so it is measured, once per view), looked up at 1/4096 grey."""
        if self._under is None or self._under_from is not self._maps:
            inside = grain[self._inside > 0]
            quantiles = np.quantile(inside[:: max(1, inside.size // 65536)], (np.arange(512) + 0.5) / 512)
            levels = np.linspace(-quantiles.max(), 1.0 - quantiles.min(), 1024)
            shown = np.clip(levels[:, None] + quantiles[None, :], 0.0, 1.0).mean(axis=1)
            keep = (shown > 1e-4) & (shown < 1 - 1e-4)
            self._under = np.interp(np.linspace(0, 1, 4096), shown[keep], levels[keep]).astype(np.float32)
            self._under_from = self._maps
        index = np.clip(mean * 4095 + 0.5, 0, 4095).astype(np.int32)
        return self._under[index]


class SpeckledEngine(Engine):
    """Any backend's engine followed by the beam-speckle stage; its polar planes follow the engine's noise mode
    and seed (``fixed``: drawn once and anchored to the tissue, so the grain moves with the anatomy and a paused
    probe gives a still output)."""

    def __init__(self, inner: Engine, config: BeamSpeckleConfig, options: EngineOptions = EngineOptions(),
                 texture: ScannerTextureConfig | None = None):
        self.texture = None if texture is None else ScannerTexture(texture)
        self.inner, self.stage = inner, BeamSpeckle(config, anchored=options.noise == "fixed", texture=self.texture,
                                                    seed=options.seed + 2)
        self.name = inner.name
        self.options = options
        # seeded apart from the net's planes (seed + 1): the grain is not a function of the net's noise
        self.noise = NoisePlanes(EngineOptions(noise=options.noise, seed=options.seed + 1), as_numpy=True)

    def infer(self, frame: np.ndarray) -> np.ndarray:
        return self.infer_at(frame, None)

    def infer_at(self, frame: np.ndarray, pose: np.ndarray | None,
                 spacing_mm: tuple[float, float] | None = None) -> np.ndarray:
        """The net at its own scale (``BeamSpeckle.net_scale``: a frame of longer or shorter beams is resampled for
        it, and its output and base back), then the stage at the frame's full size: the grain is formed on the
        polar grid, so its size follows the view whatever the frame's pixel count."""
        check_frame(frame)
        planes = None if self.options.noise == "off" else self.noise.planes([self.stage.plane_shape] * 2)
        scale, maps = self.stage.net_scale(frame)
        if scale is None:
            return self.stage.apply(self.inner.infer(frame), frame, planes, pose, maps=maps, spacing_mm=spacing_mm)
        region = self.stage.image(frame)  # in the view net_scale has just checked
        at = Resampled(frame, region, scale)
        try:
            styled = self.inner.infer(at.frame)
        except ValueError as exc:  # a compiled engine's size range: say which size the net was given, and why
            raise ValueError(f"{exc} (this {frame.shape[0]}x{frame.shape[1]} frame goes to the net as "
                             f"{at.frame.shape[0]}x{at.frame.shape[1]}: resampled to the scale it was trained at, "
                             f"beams of {self.stage.config.net_depth_px:.0f} px)") from exc
        styled, base = at.back(styled, self.stage.base(styled, at.view))
        if at.shrunk and self.stage.config.detail:  # what the net's detail carries at its own scale, it could not see
            styled += self.stage.config.detail * at.shrunk_away()
        return self.stage.apply(styled, frame, planes, pose, base=base, maps=maps, region=region, spacing_mm=spacing_mm)

    def describe(self) -> dict:
        stage = self.stage.config.to_dict()
        if stage["grey_curve"]:  # 256 numbers in every log line and stats record: its shape at five greys instead
            stage["grey_curve"] = {"base": [0.0, 0.25, 0.5, 0.75, 1.0],
                                   "shown": [round(stage["grey_curve"][i], 4) for i in (0, 64, 128, 191, 255)]}
        described = {**self.inner.describe(), "beam_speckle": stage}
        if self.texture is not None:  # not the blocks themselves: a few hundred kB
            t = self.texture.config
            described["scanner_texture"] = {"blocks": t.count, "block_px": t.block, "depth_px": t.depth_px,
                                            "sources": t.sources}
        return described

    def reset(self, key: str | None = None) -> None:
        self.inner.reset(key)
        self.noise.reset(key)
        self.stage = BeamSpeckle(self.stage.config, self.stage.motion is not None, self.texture, self.stage.renew,
                                 self.options.seed + 2)  # fan, motion and the renewed scatterers go too
