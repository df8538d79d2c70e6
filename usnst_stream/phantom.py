"""Synthetic B-mode phantoms: what an ultrasound simulator renders, at two qualities, with its segmentation.

The real simulator and the thesis datasets cannot be shipped, so the project renders its own scenes with
the physics that make ultrasound look like ultrasound (Szabo, "Diagnostic Ultrasound Imaging", ch. 8-10):

- a sector (fan) probe: samples taken along rays in polar coordinates, then scan-converted to pixels;
- speckle: complex Gaussian scatterers fixed in the *world*, weighted by each tissue's echogenicity and
  blurred by the point-spread function (axial × lateral Gaussian), whose magnitude is the echo envelope;
- attenuation accumulated along each ray (bright skull → acoustic shadow, fluid → posterior enhancement)
  with a time-gain compensation for average tissue, then log compression to a dynamic range;
- a probe that drifts slowly: scatterers belong to the world, so consecutive frames are coherent.

One scene renders a high-quality frame (HQ), a low-quality frame (LQ: fewer rays, fewer scatterers,
a wider PSF, electronic noise, less dynamic range) and the segmentation map, whose labels follow the
thesis convention: fetal structures in [150, 220], other tissue below 150, 0 outside the sector.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from usnst.engines.acoustics import (
    BODY,
    BRAIN,
    CHOROID,
    DIAPHRAGM,
    ECHO_LEVEL,
    FAT,
    FLUID,
    HQ_AXIAL_SIGMA_MM,
    HQ_DYNAMIC_RANGE_DB,
    HQ_LATERAL_SIGMA_RAYS,
    HQ_RAYS,
    HQ_SAMPLES,
    KIDNEY,
    LIVER,
    MEDULLA,
    MIDLINE,
    MUSCLE,
    OUTSIDE,
    PLACENTA,
    SINUS,
    SKULL,
    TISSUE,
    VESSEL,
    WALL,
)
from usnst_io.media import to_uint8, write_png

# Per label: echogenicity (scatter amplitude) and attenuation (nepers per mm, round trip).
_ECHO = np.zeros(256, np.float32)
_ATTEN = np.zeros(256, np.float32)
for _label, _echo, _att in [
    (TISSUE, 1.0, 0.010), (WALL, 1.8, 0.014), (FLUID, 0.03, 0.001), (PLACENTA, 1.4, 0.011),
    (CHOROID, 1.7, 0.010), (BRAIN, 0.35, 0.008), (BODY, 0.75, 0.010), (MIDLINE, 2.5, 0.010), (SKULL, 5.0, 0.09),
    (FAT, 0.5, 0.012), (MUSCLE, 0.8, 0.012), (LIVER, 1.0, 0.010), (DIAPHRAGM, 4.0, 0.05), (VESSEL, 0.02, 0.001),
    (KIDNEY, 0.55, 0.010), (MEDULLA, 0.2, 0.008), (SINUS, 2.2, 0.012),
]:
    _ECHO[_label], _ATTEN[_label] = _echo, _att
_TGC = 0.010  # compensates average tissue attenuation, so only departures from it show
# The RF formation reads the attenuations above as nepers per mm per MHz (tissue: 0.43 dB/cm/MHz one way).

FORMATIONS = ("gaussian", "rf")  # the first (Gaussian PSF on complex scatterers), the second (usnst_stream.rf_formation)
ANATOMIES = ("fetal", "abdominal")


PROBES = ("curvilinear", "phased", "linear", "trapezoid")


@dataclass(frozen=True)
class ProbeGeometry:
    """Where a probe's rays run, in probe coordinates (mm; x across, y down from the apex or the skin line).

    - ``curvilinear`` and ``phased``: rays fan out from an apex at angles within ``sector_deg``, sampled from radius
      ``start_mm`` (a curved array's face; a phased array's is a point) to ``depth_mm``.
    - ``linear``: parallel rays from a face ``width_mm`` wide, sampled from ``start_mm`` to ``depth_mm`` deep.
    - ``trapezoid`` (a linear array's virtual-apex format): rays from a virtual apex above a flat face ``width_mm``
      wide, fanned over ``sector_deg``, shown from the face to ``depth_mm`` below it (flat top and bottom).

    ``top_mm``: the frame's top edge in probe coordinates (a curved array's face, not its apex, at the top).
    The defaults are the phantom's original probe (a sector with a 3 mm face), kept so that datasets and recipes
    render as they always did; ``probe(kind)`` gives each kind's usual geometry."""

    depth_mm: float = 120.0
    sector_deg: float = 70.0
    start_mm: float = 3.0
    kind: str = "curvilinear"
    width_mm: float = 0.0
    top_mm: float = 0.0

    def __post_init__(self):
        if self.kind not in PROBES:
            raise ValueError(f"probe kind must be one of {', '.join(PROBES)}, got {self.kind!r}")
        if self.kind in ("linear", "trapezoid") and self.width_mm <= 0:
            raise ValueError(f"a {self.kind} probe needs width_mm > 0")

    @property
    def virtual_apex_mm(self) -> float:
        """A trapezoid's apex distance above the face: its outer rays leave the face's ends at ± half the sector."""
        return self.width_mm / 2 / math.tan(math.radians(self.sector_deg) / 2)

    def extent(self) -> tuple[float, float, float]:
        """The field of view's half width and its bottom, in probe coordinates (mm), and its top (the frame's)."""
        half = math.radians(self.sector_deg) / 2
        if self.kind == "linear":
            return self.width_mm / 2, self.depth_mm, self.top_mm
        if self.kind == "trapezoid":
            return self.width_mm / 2 + self.depth_mm * math.tan(half), self.depth_mm, self.top_mm
        return self.depth_mm * math.sin(half), self.depth_mm, self.top_mm


def probe(kind: str) -> ProbeGeometry:
    """Each kind's usual field of view: a curved abdominal array (60 mm face radius, 60°, 160 mm deep from the apex),
    a cardiac phased array (90°, 140 mm), a vascular / small-parts linear array (38 mm wide, 50 mm deep) and its
    trapezoid format (38 mm face, 40°, 60 mm deep)."""
    if kind == "curvilinear":
        return ProbeGeometry(depth_mm=160.0, sector_deg=60.0, start_mm=60.0, top_mm=60.0 * math.cos(math.radians(30)))
    if kind == "phased":
        return ProbeGeometry(depth_mm=140.0, sector_deg=90.0, start_mm=0.5, kind="phased")
    if kind == "linear":
        return ProbeGeometry(depth_mm=50.0, start_mm=0.5, kind="linear", width_mm=38.0)
    if kind == "trapezoid":
        return ProbeGeometry(depth_mm=60.0, sector_deg=40.0, start_mm=0.5, kind="trapezoid", width_mm=38.0)
    raise ValueError(f"probe kind must be one of {', '.join(PROBES)}, got {kind!r}")


@dataclass(frozen=True)
class Quality:
    """How finely one frame is acquired. LQ differs from HQ the way a cheap simulator render does."""

    rays: int
    samples: int  # along each ray
    lateral_sigma: float  # PSF width across rays, in rays
    axial_sigma_mm: float
    scatter_density: float  # fraction of world scatterers this quality sees
    noise_db: float  # electronic noise relative to mean tissue echo; -inf for none
    dynamic_range_db: float
    gain_db: float = 0.0  # overall gain: brighter (> 0) or darker frames


HQ = Quality(rays=HQ_RAYS, samples=HQ_SAMPLES, lateral_sigma=HQ_LATERAL_SIGMA_RAYS, axial_sigma_mm=HQ_AXIAL_SIGMA_MM,
             scatter_density=1.0, noise_db=-math.inf, dynamic_range_db=HQ_DYNAMIC_RANGE_DB)
LQ = Quality(rays=96, samples=256, lateral_sigma=1.1, axial_sigma_mm=0.6, scatter_density=0.5,
             noise_db=-22.0, dynamic_range_db=45.0)


@dataclass
class Sample:
    lq: np.ndarray  # float32 (H, W) in [0, 1]
    hq: np.ndarray  # float32 (H, W) in [0, 1]
    seg: np.ndarray  # uint8 (H, W) labels


def probe_pose(t: float) -> tuple[float, float, float]:
    """Apex (x, y) in mm and rotation in radians at time t seconds: a slow, smooth sweep like a trainee's hand."""
    return 9.0 * math.sin(2 * math.pi * t / 11.0), 0.0, math.radians(7.0) * math.sin(2 * math.pi * t / 17.0)


def _sparse_gain(uniform: np.ndarray, density: float) -> np.ndarray:
    """Keep a ``density`` fraction of scatterers, rescaled so the mean echo power is unchanged."""
    if density >= 1.0:
        return np.ones_like(uniform)
    return (uniform < density).astype(np.float32) / math.sqrt(density)


def _in_ellipse(x, y, cx, cy, rx, ry, angle):
    c, s = math.cos(angle), math.sin(angle)
    u = ((x - cx) * c + (y - cy) * s) / rx
    v = (-(x - cx) * s + (y - cy) * c) / ry
    return u * u + v * v < 1.0, u, v


class Scene:
    """A random fetal-head scene in world millimetres: label geometry plus fixed scatterer fields."""

    X0, X1, Y0, Y1 = -110.0, 110.0, -10.0, 140.0  # world extent covered by scatterers
    RES = 0.15  # mm per scatterer cell
    RF_RES = 0.05  # mm per cell of the RF formation's real scatterers: finer than its wavelengths

    def __init__(self, seed: int = 0, speckle_seed: int | None = None):
        """``speckle_seed`` draws the scatterer fields from another seed: the same anatomy with independent speckle
        (the oracle a realism model is measured against: it cannot copy HQ's speckle, only its statistics)."""
        rng = np.random.default_rng(seed)
        self._draw_anatomy(rng)
        self._draw_fields(rng, speckle_seed)
        self._rf_seed = [seed, 2718] if speckle_seed is None else [speckle_seed, 2718, 1]
        self._rf_field = None

    def rf_field(self) -> np.ndarray:
        """The RF formation's scatterers: real, unit variance, one per RF_RES cell over the world extent, fixed in
        the world like the others (drawn on first use: the first formation never pays for them)."""
        if self._rf_field is None:
            nx, ny = int((self.X1 - self.X0) / self.RF_RES), int((self.Y1 - self.Y0) / self.RF_RES)
            self._rf_field = np.random.default_rng(self._rf_seed).standard_normal((ny, nx), dtype=np.float32)
        return self._rf_field

    def rf_scatterers(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The RF scatterer at each world point (x, y) mm: nearest cell, so every sample keeps unit variance."""
        fx, fy = self.world_to_cells(x, y, self.RF_RES)
        return cv2.remap(self.rf_field(), fx, fy, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT)

    def _draw_anatomy(self, rng: np.random.Generator) -> None:
        self.fluid = (rng.uniform(-8, 8), rng.uniform(68, 78), rng.uniform(62, 78), rng.uniform(40, 48), rng.uniform(-0.15, 0.15))
        fx, fy, frx, fry, fa = self.fluid
        self.head_angle = rng.uniform(-0.7, 0.7)
        self.head = (fx + rng.uniform(-12, 12), fy + rng.uniform(-4, 8), rng.uniform(24, 31), rng.uniform(19, 24))
        side = rng.choice([-1.0, 1.0])
        self.body = (self.head[0] + side * rng.uniform(38, 48), self.head[1] + rng.uniform(5, 15),
                     rng.uniform(22, 28), rng.uniform(16, 20), rng.uniform(-0.4, 0.4))
        self.placenta = (fx + rng.uniform(-20, 20), fy - fry + rng.uniform(4, 8), rng.uniform(30, 45), rng.uniform(7, 10))
        self.wall_phase = rng.uniform(0, 2 * math.pi)

    def _draw_fields(self, rng: np.random.Generator, speckle_seed: int | None) -> None:
        nx, ny = int((self.X1 - self.X0) / self.RES), int((self.Y1 - self.Y0) / self.RES)
        self.scat_re = rng.standard_normal((ny, nx), dtype=np.float32)
        self.scat_im = rng.standard_normal((ny, nx), dtype=np.float32)
        self.sparse_mask = rng.random((ny, nx), dtype=np.float32)  # LQ keeps cells below its density
        if speckle_seed is not None:
            other = np.random.default_rng([speckle_seed, 7919])
            self.scat_re = other.standard_normal((ny, nx), dtype=np.float32)
            self.scat_im = other.standard_normal((ny, nx), dtype=np.float32)
        # Low-frequency tissue texture (≈ 4 mm blobs), so tissue is not a uniform grey.
        tex = rng.standard_normal((ny // 16, nx // 16)).astype(np.float32)
        tex = cv2.GaussianBlur(tex, (0, 0), 1.5)
        tex /= tex.std() + 1e-6
        self.texture = cv2.resize(np.exp(0.25 * tex), (nx, ny), interpolation=cv2.INTER_LINEAR)

    def labels(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Label of every world point (x, y) in mm; later regions paint over earlier ones."""
        lab = np.full(x.shape, TISSUE, np.uint8)
        lab[y < 12.0 + 2.5 * np.sin(x / 14.0 + self.wall_phase)] = WALL
        fx, fy, frx, fry, fa = self.fluid
        in_fluid, _, _ = _in_ellipse(x, y, fx, fy, frx, fry, fa)
        lab[in_fluid] = FLUID
        px, py, prx, pry = self.placenta
        lab[in_fluid & _in_ellipse(x, y, px, py, prx, pry, fa)[0]] = PLACENTA
        bx, by, brx, bry, ba = self.body
        lab[_in_ellipse(x, y, bx, by, brx, bry, ba)[0]] = BODY
        hx, hy, hrx, hry = self.head
        a = self.head_angle
        lab[_in_ellipse(x, y, hx, hy, hrx + 3.0, hry + 3.0, a)[0]] = SKULL
        in_brain, u, v = _in_ellipse(x, y, hx, hy, hrx, hry, a)
        lab[in_brain] = BRAIN
        lab[in_brain & (np.abs(v * hry) < 0.7) & (np.abs(u) < 0.85)] = MIDLINE
        for side in (-1.0, 1.0):  # choroid plexus, one each side of the midline
            c, s = math.cos(a), math.sin(a)
            cx, cy = hx + 0.25 * hrx * c - side * 0.3 * hry * s, hy + 0.25 * hrx * s + side * 0.3 * hry * c
            lab[in_brain & _in_ellipse(x, y, cx, cy, 0.22 * hrx, 0.12 * hry, a)[0]] = CHOROID
        return lab

    def world_to_cells(self, x: np.ndarray, y: np.ndarray, res: float = RES) -> tuple[np.ndarray, np.ndarray]:
        return ((x - self.X0) / res).astype(np.float32), ((y - self.Y0) / res).astype(np.float32)


class _PolarGrid:
    """Sample positions of one quality along its rays in probe coordinates (samples × rays), the spacing ``dr`` of
    samples along a ray, and ``r``: each sample's path from where time-gain compensation starts."""

    def __init__(self, geometry: ProbeGeometry, quality: Quality):
        half = math.radians(geometry.sector_deg) / 2
        self.apex = 0.0  # how far above the probe coordinates' origin rays start (a trapezoid's virtual apex)
        self.above_face: np.ndarray | None = None  # samples outside the body (a trapezoid's, near its face's ends)
        if geometry.kind == "linear":
            self.r = np.linspace(geometry.start_mm, geometry.depth_mm, quality.samples, dtype=np.float32)
            x = np.linspace(-geometry.width_mm / 2, geometry.width_mm / 2, quality.rays, dtype=np.float32)
            self.local_x = np.broadcast_to(x[None, :], (quality.samples, quality.rays)).copy()
            self.local_y = np.broadcast_to(self.r[:, None], (quality.samples, quality.rays)).copy()
        elif geometry.kind == "trapezoid":
            self.apex = geometry.virtual_apex_mm
            radius = np.linspace(self.apex + geometry.start_mm, (self.apex + geometry.depth_mm) / math.cos(half),
                                 quality.samples, dtype=np.float32)
            self.theta = np.linspace(-half, half, quality.rays, dtype=np.float32)
            self.local_x = radius[:, None] * np.sin(self.theta)[None, :]
            self.local_y = radius[:, None] * np.cos(self.theta)[None, :] - np.float32(self.apex)
            self.r = radius - np.float32(self.apex)  # TGC from the face's centre depth: a ray's path below the face
            self.above_face = self.local_y < 0
        else:
            self.r = np.linspace(geometry.start_mm, geometry.depth_mm, quality.samples, dtype=np.float32)
            self.theta = np.linspace(-half, half, quality.rays, dtype=np.float32)
            self.local_x = self.r[:, None] * np.sin(self.theta)[None, :]
            self.local_y = self.r[:, None] * np.cos(self.theta)[None, :]
        self.dr = float(self.r[1] - self.r[0])


class PhantomRenderer:
    """Renders (LQ, HQ, segmentation) frames of one scene at a chosen output size."""

    def __init__(self, height: int = 256, width: int = 256, seed: int = 0, geometry: ProbeGeometry = ProbeGeometry(),
                 speckle_seed: int | None = None, lq: Quality = LQ, hq: Quality = HQ, formation: str = FORMATIONS[0],
                 anatomy: str = ANATOMIES[0], pulses: tuple | None = None):
        """``formation``: how echoes become an image (FORMATIONS); ``anatomy``: the scene (ANATOMIES); ``pulses``:
        the RF formation's (HQ, LQ) ``rf_formation.Pulse`` (default: the probe kind's usual ones)."""
        if height < 8 or width < 8:
            raise ValueError(f"phantom frames must be at least 8×8 pixels, got {height}×{width}")
        if formation not in FORMATIONS:
            raise ValueError(f"formation must be one of {', '.join(FORMATIONS)}, got {formation!r}")
        if anatomy not in ANATOMIES:
            raise ValueError(f"anatomy must be one of {', '.join(ANATOMIES)}, got {anatomy!r}")
        if pulses is not None and formation != "rf":
            raise ValueError("pulses shape the RF formation's echoes; the gaussian formation has none")
        self.height, self.width, self.geometry, self.formation = height, width, geometry, formation
        if anatomy == "abdominal":
            from usnst_stream.abdomen import AbdominalScene

            self.scene = AbdominalScene(seed, speckle_seed)
        else:
            self.scene = Scene(seed, speckle_seed)
        self.lq, self.hq = lq, hq
        self.noise_rng = np.random.default_rng(seed + 1_000_003)
        self.grids = {q: _PolarGrid(geometry, q) for q in (hq, lq)}
        if formation == "rf":
            from usnst_stream import rf_formation

            hq_pulse, lq_pulse = pulses or (rf_formation.HQ_PULSES[geometry.kind], rf_formation.LQ_PULSES[geometry.kind])
            self.pulses = {hq: hq_pulse, lq: lq_pulse}
            self.rf_grids = {}
            for q, pulse in self.pulses.items():  # display sample i is RF sample i × every
                every = max(1, math.ceil(self.grids[q].dr / pulse.step_mm()))
                grid = _PolarGrid(geometry, replace(q, samples=(q.samples - 1) * every + 1))
                if grid.local_x.shape[1] > 1:  # mm between neighbouring beams at each sample
                    spacing = np.hypot(np.diff(grid.local_x, axis=1), np.diff(grid.local_y, axis=1)).mean(axis=1)
                else:
                    spacing = np.ones(len(grid.r), np.float32)
                self.rf_grids[q] = (grid, every, spacing)
        # Pixel grid in probe coordinates (mm): the field of view centred across, its top at the frame's top.
        half = math.radians(geometry.sector_deg) / 2
        half_w, bottom, top = geometry.extent()
        box_w, box_h = 2 * half_w, bottom - top
        scale = max(box_w / width, box_h / height)
        self.pixel_mm = scale  # square pixels
        self._pixel_offset_mm = (box_h - height * scale) / 2 + top
        xs = (np.arange(width, dtype=np.float32) - (width - 1) / 2) * scale
        ys = (np.arange(height, dtype=np.float32) + 0.5) * scale + self._pixel_offset_mm
        self.pix_x, self.pix_y = np.meshgrid(xs, ys)
        # Scan-conversion maps per quality: fractional (ray, sample) index of every pixel; -1 outside.
        if geometry.kind == "linear":
            ray01 = (self.pix_x + geometry.width_mm / 2) / geometry.width_mm
            along, first = self.pix_y, geometry.start_mm
            self.in_sector = (along >= first) & (along <= geometry.depth_mm) & (np.abs(self.pix_x) <= half_w)
        else:
            apex = self.grids[hq].apex
            r = np.hypot(self.pix_x, self.pix_y + apex)
            th = np.arctan2(self.pix_x, self.pix_y + apex)
            ray01 = (th + half) / (2 * half)
            along, first = r, apex + geometry.start_mm
            last = (apex + geometry.depth_mm) / math.cos(half) if geometry.kind == "trapezoid" else geometry.depth_mm
            self.in_sector = (r >= first) & (r <= last) & (np.abs(th) <= half)
            if geometry.kind == "trapezoid":  # only below the face, and no deeper than the depth shown
                self.in_sector &= (self.pix_y >= geometry.start_mm) & (self.pix_y <= geometry.depth_mm)
        self.scan_maps = {}
        for q, g in self.grids.items():
            mx = ray01 * (q.rays - 1)
            my = (along - first) / g.dr
            mx[~self.in_sector] = -1
            my[~self.in_sector] = -1
            self.scan_maps[q] = (mx.astype(np.float32), my.astype(np.float32))
        self._ref = {q: self._reference_level(q) for q in (hq, lq)}

    def _reference_level(self, q: Quality) -> float:
        """Mean envelope of unit-echo tissue for this quality: a fixed 0 dB so brightness does not flicker."""
        if self.formation == "rf":  # the scene's own scatterers (their sampling sets the power), unit echo
            grid = self.rf_grids[q][0]
            amplitude = self.scene.rf_scatterers(*self._world(grid.local_x, grid.local_y, 0.0))
            return float(self._rf_envelope(q, amplitude, np.zeros(len(amplitude)), noise=False)[1:-1].mean())
        rng = np.random.default_rng(0)
        re, im = (rng.standard_normal((256, 256), dtype=np.float32) for _ in range(2))
        keep = _sparse_gain(rng.random((256, 256), dtype=np.float32), q.scatter_density)
        re, im = re * keep, im * keep
        sig = self._psf_sigmas(q)
        env = np.hypot(cv2.GaussianBlur(re, (0, 0), sig[0], sigmaY=sig[1]), cv2.GaussianBlur(im, (0, 0), sig[0], sigmaY=sig[1]))
        return float(env.mean())

    def _psf_sigmas(self, q: Quality) -> tuple[float, float]:
        return q.lateral_sigma, q.axial_sigma_mm / self.grids[q].dr

    def _world(self, local_x, local_y, t: float):
        ax, ay, rot = probe_pose(t)
        c, s = math.cos(rot), math.sin(rot)
        return ax + c * local_x + s * local_y, ay - s * local_x + c * local_y

    def _render_quality(self, q: Quality, t: float) -> np.ndarray:
        env = self._rf_quality(q, t) if self.formation == "rf" else self._gaussian_quality(q, t)
        db = 20 * np.log10(env / self._ref[q] + 1e-6) + q.gain_db
        # 0 dB (mean tissue) sits a third of the way down from white; the dynamic range sets the floor.
        img = np.clip((db + q.dynamic_range_db * 2 / 3) / q.dynamic_range_db, 0.0, 1.0).astype(np.float32)
        mx, my = self.scan_maps[q]
        return cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def _rf_quality(self, q: Quality, t: float) -> np.ndarray:
        """The second formation's envelope on this quality's polar grid, time-gain compensated."""
        from usnst_stream import rf_formation as rf

        grid = self.rf_grids[q][0]
        pulse = self.pulses[q]
        wx, wy = self._world(grid.local_x, grid.local_y, t)
        labels = self.scene.labels(wx, wy)
        cx, cy = self.scene.world_to_cells(wx, wy)
        echo = _ECHO[labels] * cv2.remap(self.scene.texture, cx, cy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        if grid.above_face is not None:  # outside the body: nothing echoes
            echo[grid.above_face] = 0.0
        scatterers = self.scene.rf_scatterers(wx, wy)
        per_mm = _ATTEN[labels] if grid.above_face is None else np.where(grid.above_face, 0.0, _ATTEN[labels])
        attenuation = np.cumsum(per_mm, axis=0) * grid.dr  # round trip, nepers per MHz
        below_face = (grid.r - grid.r[0])[:, None]  # time-gain compensation counts from the face, not the apex
        compensation = 1.0 / rf.attenuation_gain(np.broadcast_to(_TGC * below_face, attenuation.shape), pulse)
        amplitude = echo * scatterers * rf.attenuation_gain(attenuation, pulse) * compensation
        return self._rf_envelope(q, amplitude, attenuation.mean(axis=1))

    def _rf_envelope(self, q: Quality, amplitude: np.ndarray, attenuation: np.ndarray, noise: bool = True) -> np.ndarray:
        """Echo ``amplitude`` on the RF grid to the detected envelope on the display grid; ``noise``: the quality's
        electronic noise (not while measuring the reference level it is relative to)."""
        from usnst_stream import rf_formation as rf

        grid, every, spacing = self.rf_grids[q]
        pulse = self.pulses[q]
        step = grid.dr
        depth = grid.r - grid.r[0]  # below the face, where the focus is measured from
        signal = rf.rf_lines(amplitude, depth, spacing, np.asarray(attenuation).reshape(-1), pulse, step)
        if noise and q.noise_db > -math.inf:
            sigma = self._ref[q] * 10 ** (q.noise_db / 20)
            signal = signal + rf.band_noise(signal.shape, sigma, pulse, step, self.noise_rng)
        return rf.envelope(signal, every)

    def _gaussian_quality(self, q: Quality, t: float) -> np.ndarray:
        """The first formation's envelope on this quality's polar grid, time-gain compensated."""
        g = self.grids[q]
        wx, wy = self._world(g.local_x, g.local_y, t)
        labels = self.scene.labels(wx, wy)
        cx, cy = self.scene.world_to_cells(wx, wy)
        sample = lambda field: cv2.remap(field, cx, cy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        echo = _ECHO[labels] * sample(self.scene.texture)
        re, im = sample(self.scene.scat_re), sample(self.scene.scat_im)
        if q.scatter_density < 1.0:
            keep = _sparse_gain(sample(self.scene.sparse_mask), q.scatter_density)
            re, im = re * keep, im * keep
        sig_lat, sig_ax = self._psf_sigmas(q)
        re = cv2.GaussianBlur(echo * re, (0, 0), sig_lat, sigmaY=sig_ax)
        im = cv2.GaussianBlur(echo * im, (0, 0), sig_lat, sigmaY=sig_ax)
        if q.noise_db > -math.inf:
            sigma = self._ref[q] * 10 ** (q.noise_db / 20)
            re += self.noise_rng.standard_normal(re.shape, dtype=np.float32) * sigma
            im += self.noise_rng.standard_normal(im.shape, dtype=np.float32) * sigma
        env = np.hypot(re, im)
        # Attenuation integrated along each ray, minus the time-gain compensation for average tissue.
        attenuation = _ATTEN[labels] if g.above_face is None else np.where(g.above_face, 0.0, _ATTEN[labels])
        depth_gain = np.exp(-np.cumsum(attenuation, axis=0) * g.dr + _TGC * g.r[:, None])
        return env * depth_gain

    def displacement(self, t0: float, t1: float) -> np.ndarray:
        """The true motion of the anatomy on screen: (H, W, 2) pixels (dx, dy) from where each pixel's world point
        is seen at ``t0`` to where it is seen at ``t1`` (the probe's rigid move, inverted)."""
        wx, wy = self._world(self.pix_x, self.pix_y, t0)
        ax, ay, rot = probe_pose(t1)
        c, s = math.cos(rot), math.sin(rot)
        lx, ly = c * (wx - ax) - s * (wy - ay), s * (wx - ax) + c * (wy - ay)
        col = lx / self.pixel_mm + (self.width - 1) / 2
        row = (ly - self._pixel_offset_mm) / self.pixel_mm - 0.5
        cols, rows = np.meshgrid(np.arange(self.width, dtype=np.float32), np.arange(self.height, dtype=np.float32))
        return np.stack([col - cols, row - rows], axis=-1).astype(np.float32)

    def image_to_world(self, t: float) -> np.ndarray:
        """The frame's pose at time t as a simulator sends it (``meta.image_to_world``): the 4×4 matrix taking a
        pixel's (column, row, 0, 1) to world millimetres; the image plane is the world's z = 0."""
        ax, ay, rot = probe_pose(t)
        c, s, mm = math.cos(rot), math.sin(rot), self.pixel_mm
        lx0, ly0 = -(self.width - 1) / 2 * mm, 0.5 * mm + self._pixel_offset_mm  # pixel (0, 0) in probe coordinates
        return np.array([[c * mm, s * mm, 0.0, ax + c * lx0 + s * ly0],
                         [-s * mm, c * mm, 0.0, ay - s * lx0 + c * ly0],
                         [0.0, 0.0, mm, 0.0],
                         [0.0, 0.0, 0.0, 1.0]])

    def segmentation(self, t: float = 0.0) -> np.ndarray:
        wx, wy = self._world(self.pix_x, self.pix_y, t)
        seg = self.scene.labels(wx, wy)
        seg[~self.in_sector] = OUTSIDE
        return seg

    def render(self, t: float = 0.0) -> Sample:
        """The scene seen at time t (seconds): the probe pose follows ``probe_pose(t)``."""
        return Sample(lq=self._render_quality(self.lq, t), hq=self._render_quality(self.hq, t), seg=self.segmentation(t))


# The thesis' simulated dataset: one PNG per sample, three panels side by side (LQ | HQ | segmentation).
THESIS_PANEL = (1000, 1386)  # height, width of one panel


def triptych(sample: Sample) -> np.ndarray:
    return np.concatenate([to_uint8(sample.lq), to_uint8(sample.hq), sample.seg], axis=1)


# Acquisition settings for training sets: probe geometry, depth, gain, PSF width and noise vary per scene within
# "varied"; "outside" draws from beyond those ranges (to test that a model invents nothing on unfamiliar inputs).
SETTINGS = ("default", "varied", "outside")


def acquisition(kind: str, rng: np.random.Generator, base: ProbeGeometry | None = None,
                formation: str = FORMATIONS[0]) -> dict:
    """PhantomRenderer keyword arguments (geometry, lq, hq; pulses for the RF formation) for one scene under
    ``kind`` (see SETTINGS), around the ``base`` probe (None: the phantom's original; its scenes render as they
    always did). The RF formation's pulses vary after everything else is drawn, so the rest is the same scene's."""
    if kind == "default":
        return {} if base is None else {"geometry": base}
    if kind not in SETTINGS:
        raise ValueError(f"settings must be one of {SETTINGS}, got {kind!r}")
    inside = kind == "varied"
    pick = lambda lo, hi, out_lo, out_hi: rng.uniform(lo, hi) if inside else (
        rng.uniform(out_lo, lo) if rng.random() < 0.5 else rng.uniform(hi, out_hi))
    depth, sector = pick(95, 135, 70, 160), pick(55, 80, 40, 95)
    geometry = ProbeGeometry(depth_mm=depth, sector_deg=sector) if base is None else \
        replace(base, depth_mm=base.depth_mm * depth / 120, sector_deg=min(base.sector_deg * sector / 70, 150.0))
    if base is not None and base.kind == "curvilinear" and base.top_mm:  # the face's ends, where the frame's top is
        geometry = replace(geometry, top_mm=geometry.start_mm * math.cos(math.radians(geometry.sector_deg) / 2))
    gain = pick(-4, 4, -9, 9)
    lq = replace(LQ, lateral_sigma=pick(0.9, 1.4, 0.6, 2.0), axial_sigma_mm=pick(0.45, 0.75, 0.3, 1.0),
                 noise_db=pick(-26, -18, -32, -12), dynamic_range_db=pick(40, 50, 34, 56), gain_db=gain)
    hq = replace(HQ, gain_db=gain)
    if formation != "rf":
        return {"geometry": geometry, "lq": lq, "hq": hq}
    from usnst_stream.rf_formation import HQ_PULSES, LQ_PULSES

    focus = geometry.depth_mm * pick(0.3, 0.6, 0.15, 0.85)
    hq_pulse = replace(HQ_PULSES[geometry.kind], center_mhz=HQ_PULSES[geometry.kind].center_mhz * pick(0.85, 1.15, 0.65, 1.4),
                       f_number=pick(1.7, 2.5, 1.2, 3.5), focus_mm=focus)
    lq_pulse = replace(LQ_PULSES[geometry.kind], center_mhz=LQ_PULSES[geometry.kind].center_mhz * pick(0.85, 1.15, 0.65, 1.4),
                       f_number=pick(2.5, 3.5, 2.0, 4.5), focus_mm=focus)
    return {"geometry": geometry, "lq": lq, "hq": hq, "pulses": (hq_pulse, lq_pulse)}


def render_scene(seed: int, index: int, height: int, width: int, settings: str = "default",
                 speckle_seed: int | None = None, probe_kind: str | None = None, formation: str = FORMATIONS[0],
                 anatomy: str = ANATOMIES[0]) -> Sample:
    """Scene ``seed`` as the ``index``-th of a set renders it (``write_phantoms``): its acquisition drawn for
    ``settings`` around ``probe_kind``'s geometry (None: the original probe), the probe pose varied with the index;
    ``speckle_seed`` gives the oracle (new scatterers)."""
    kwargs = acquisition(settings, np.random.default_rng([seed, 4242]), None if probe_kind is None else probe(probe_kind),
                         formation)
    renderer = PhantomRenderer(height, width, seed=seed, speckle_seed=speckle_seed, formation=formation,
                               anatomy=anatomy, **kwargs)
    return renderer.render(t=float(index % 7))


# Seeds of the independent scatterer fields behind ``write_phantoms(independent_hq=True)``: scene s draws s + this.
INDEPENDENT_SPECKLE = 7_777_777


def write_phantoms(out_dir: str | Path, n: int, height: int = THESIS_PANEL[0], width: int = THESIS_PANEL[1],
                   seed: int = 0, progress=None, settings: str = "default", independent_hq: bool = False,
                   overwrite: bool = False, probe_kind: str | None = None, formation: str = FORMATIONS[0],
                   anatomy: str = ANATOMIES[0]) -> list[Path]:
    """Write ``n`` triptych PNGs, one random scene each (scene i uses seed + i), in the thesis layout; ``settings``
    varies the acquisition per scene (SETTINGS), ``probe_kind`` chooses the probe (PROBES; None: the original),
    ``formation`` how echoes become the image (FORMATIONS), ``anatomy`` the scene (ANATOMIES).
    ``independent_hq``: the HQ panel drawn with its own scatterers
    (same anatomy and acquisition, speckle unrelated to LQ's), so a net regressed on it can only learn HQ's mean grey
    — the base that engines.beam_speckle adds its grain to.

    Each file is written to a temporary name and renamed, so an interrupted run leaves only whole files. The folder
    records what made them (``phantoms.json``): the same command again resumes (files already there are kept, they
    are the same scenes), other settings over existing files are refused unless ``overwrite``.
    """
    out = Path(out_dir)
    recipe = {"height": height, "width": width, "settings": settings, "independent_hq": independent_hq}
    if probe_kind is not None:  # recorded only when chosen: folders made before probes had kinds still resume
        probe(probe_kind)  # refuse an unknown kind before writing anything
        recipe["probe"] = probe_kind
    for key, value, choices in (("formation", formation, FORMATIONS), ("anatomy", anatomy, ANATOMIES)):
        if value not in choices:
            raise ValueError(f"{key} must be one of {', '.join(choices)}, got {value!r}")
        if value != choices[0]:  # recorded only when not the first: older folders still resume
            recipe[key] = value
    record = out / "phantoms.json"
    names = [out / f"phantom_{seed + i:05d}.png" for i in range(n)]
    existing = [p for p in names if p.exists()]
    same = record.is_file() and json.loads(record.read_text() or "{}") == recipe
    if existing and not same and not overwrite:
        raise ValueError(f"{out} already holds phantoms made with other settings (or unrecorded ones), e.g. "
                         f"{existing[0].name}: choose another --out, or pass --overwrite to replace them")
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(recipe, indent=2))
    paths = []
    for i, path in enumerate(names):
        if same and path.exists() and not overwrite:  # the same scene, already whole (a resumed run)
            paths.append(path)
            if progress is not None:
                progress(1)
            continue
        look = {"probe_kind": probe_kind, "formation": formation, "anatomy": anatomy}
        sample = render_scene(seed + i, i, height, width, settings, **look)
        if independent_hq:
            sample.hq = render_scene(seed + i, i, height, width, settings, speckle_seed=seed + i + INDEPENDENT_SPECKLE,
                                     **look).hq
        paths.append(write_png(path, triptych(sample)))
        if progress is not None:
            progress(1)
    return paths


def uniform_cyst_frame(height: int, width: int, seed: int = 0, cyst_radius: float = 0.12) -> np.ndarray:
    """Another simulator's frame, formed unlike the phantom: a linear array's rectangle of fully developed speckle
    (complex Gaussian scatterers blurred by a Gaussian PSF on the pixel grid, 1.0 × 0.6 px σ, 50 dB log display), one
    anechoic cyst of ``cyst_radius`` × the width, nothing else. Uniform tissue everywhere but the cyst, so any other
    structure an output shows is invented (offline.realism.invented_structure)."""
    rng = np.random.default_rng([seed, 31337])
    re, im = (cv2.GaussianBlur(rng.standard_normal((height, width)).astype(np.float32), (0, 0), 1.0, sigmaY=0.6)
              for _ in range(2))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy = width * rng.uniform(0.35, 0.65), height * rng.uniform(0.4, 0.6)
    echo = np.where(np.hypot(xs - cx, ys - cy) < cyst_radius * width, 0.02, 1.0).astype(np.float32)
    env = np.hypot(re, im) * echo
    db = 20 * np.log10(env / np.sqrt(np.mean(env[echo > 0.5] ** 2)) + 1e-6)
    img = np.clip((db + 50 * 2 / 3) / 50, 0.0, 1.0).astype(np.float32)
    img[:, : width // 10] = 0.0  # the probe's aperture is narrower than the frame: black sides, as a scanner shows
    img[:, width - width // 10:] = 0.0
    img[: height // 20] = 0.0
    return img


def with_marks(frame: np.ndarray) -> np.ndarray:
    """``frame`` (float, (H, W)) with what a scanner or simulator draws around its view: labels in the four corners,
    an orientation dot above the view's left, depth ticks down the right side — white, and only where they stay 4 px
    or more (at 256 px; scaled with the frame) from the view's echo, as a display lays them out beside the image."""
    h, w = frame.shape
    scale = h / 256
    drawn = np.zeros((h, w), np.uint8)
    stroke = max(1, round(scale))
    for org in ((2, round(14 * scale)), (w - round(48 * scale), round(14 * scale)), (2, h - 4),
                (w - round(48 * scale), h - 4)):
        cv2.putText(drawn, "12cm", org, cv2.FONT_HERSHEY_SIMPLEX, 0.35 * scale, 255, stroke, cv2.LINE_AA)
    cv2.circle(drawn, (w // 3, round(8 * scale)), max(3, round(4 * scale)), 255, -1)
    for y in np.linspace(0.1 * h, 0.9 * h, 10).astype(int):
        drawn[y:y + stroke, w - round(8 * scale):w - 2] = 255
    reach = 2 * max(4, round(4 * scale)) + 1
    beside = cv2.dilate((frame > ECHO_LEVEL).astype(np.uint8), np.ones((reach, reach), np.uint8)) == 0
    return np.where((drawn > 0) & beside, 1.0, frame).astype(np.float32)
