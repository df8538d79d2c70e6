"""A second image formation for the phantom, physically unlike its first, so that a model trained or judged on one
can be tested on frames it did not see formed (and a stage that re-renders the first cannot pass by construction).

The first formation blurs complex Gaussian scatterers by a separable Gaussian PSF and takes the magnitude. This one
forms what a scanner's receive chain sees (Szabo, "Diagnostic Ultrasound Imaging", ch. 6-7, 10; Jensen's Field II
model, linearised):

- **RF lines with a carrier**: real scatterers on a fine world grid, convolved along each beam with a pulse — a
  Gaussian envelope of fractional bandwidth ``bandwidth`` under a carrier at ``center_mhz`` (round trip: the phase
  turns 4π f z / c) — then **envelope detection** by the Hilbert transform;
- **a beam with side lobes and a focus**: across beams the two-way amplitude profile is the transmit sinc (one
  focus: nulls at λ z / D, D = focus / F-number, widened by the geometric defocus D |1 − z/focus| / 2 away from it)
  times the receive sinc (dynamic focus, nulls at λ F at every depth) — sinc² with −26 dB side lobes at the focus,
  the receive's −13 dB lobes elsewhere — so bright structures leak into their neighbours' beams (haze in cysts), least
  at the focus (the grain's width is set by the receive aperture: with dynamic focus it barely changes with depth);
- **frequency-dependent attenuation**: tissue attenuates ∝ f, so a Gaussian spectrum of width σ_f travelling a
  round-trip attenuation A (nepers per MHz) is shifted down by σ_f² A and loses exp(−(f₀A − σ_f²A²/2)): the carrier
  falls with depth and the beam (∝ λ) widens with it; time-gain compensation restores average tissue's level;
- **band-limited electronic noise**: white noise through the receive (pulse) filter, added before detection.

The depth dependence is applied in ``bands`` depth bands whose kernels are interpolated linearly (a partition of
unity), the downshift taken from the beams' mean attenuation at each depth.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.signal import hilbert

SOUND_MM_PER_US = 1.54  # speed of sound in soft tissue
SIDE_LOBES = 3  # the lateral kernel reaches this many nulls each side
MAX_SHIFT = 0.7  # the carrier falls at most to 30 % of the pulse's centre frequency


@dataclass(frozen=True)
class Pulse:
    """One acquisition's transmit/receive: centre frequency, fractional −6 dB bandwidth of the amplitude spectrum,
    F-number and focal depth (mm from the face, or from the apex of a sector)."""

    center_mhz: float = 3.5
    bandwidth: float = 0.6
    f_number: float = 2.0
    focus_mm: float = 60.0
    bands: int = 12

    def __post_init__(self):
        if not (0.5 <= self.center_mhz <= 30 and 0.1 <= self.bandwidth <= 1.5 and 0.5 <= self.f_number <= 10
                and self.focus_mm > 0 and self.bands >= 2):
            raise ValueError(f"not a pulse a probe sends: {self}")

    @property
    def sigma_mhz(self) -> float:
        """The Gaussian spectrum's σ (MHz)."""
        return self.bandwidth * self.center_mhz / (2 * math.sqrt(2 * math.log(2)))

    @property
    def sigma_mm(self) -> float:
        """The pulse envelope's σ in depth (round trip: z = c t / 2)."""
        return SOUND_MM_PER_US / (4 * math.pi * self.sigma_mhz)

    def step_mm(self) -> float:
        """The RF sampling step: four samples per half wavelength at the spectrum's upper edge (f₀ + 2σ_f)."""
        return SOUND_MM_PER_US / (2 * (self.center_mhz + 2 * self.sigma_mhz)) / 4

    def axial_kernel(self, step_mm: float, center_mhz: float) -> np.ndarray:
        """The pulse along a beam, sampled every ``step_mm``, its carrier at ``center_mhz``; unit energy."""
        half = max(1, math.ceil(4 * self.sigma_mm / step_mm))
        z = np.arange(-half, half + 1) * step_mm
        k = np.exp(-0.5 * (z / self.sigma_mm) ** 2) * np.cos(4 * math.pi * center_mhz * z / SOUND_MM_PER_US)
        return (k / np.sqrt((k ** 2).sum())).astype(np.float32)

    def nulls_mm(self, depth_mm: float, center_mhz: float) -> tuple[float, float]:
        """Distances from the beam axis to the first nulls of the transmit and the receive profile at ``depth_mm``
        below the face. Transmit has one focus: diffraction-limited there (λ z / D, D = focus / F-number), widened
        by the geometric defocus D |1 − z/focus| / 2 elsewhere. Receive focuses dynamically at every depth with a
        growing aperture (constant F-number): λ F everywhere."""
        wavelength = SOUND_MM_PER_US / center_mhz
        aperture = self.focus_mm / self.f_number
        transmit = math.hypot(wavelength * max(depth_mm, 1e-3) / aperture, aperture * abs(1 - depth_mm / self.focus_mm) / 2)
        return transmit, wavelength * self.f_number

    def lateral_kernel(self, depth_mm: float, center_mhz: float, spacing_mm: float, rays: int) -> np.ndarray:
        """The two-way amplitude profile across beams ``spacing_mm`` apart — transmit sinc × receive sinc (sinc² at
        the focus: side lobes at −26 dB; away from it the receive sinc's −13 dB lobes under a wide transmit beam) —
        out to SIDE_LOBES nulls of the wider one (at most the field of view); unit energy."""
        transmit, receive = (null / max(spacing_mm, 1e-6) for null in self.nulls_mm(depth_mm, center_mhz))
        half = int(min(max(1, math.ceil(SIDE_LOBES * max(transmit, receive))), rays))
        x = np.arange(-half, half + 1, dtype=np.float64)
        k = np.sinc(x / transmit) * np.sinc(x / receive)
        return (k / np.sqrt((k ** 2).sum())).astype(np.float32)


# Usual pulses per probe kind: abdominal arrays and the phantom's original sector at 3.5 MHz, cardiac phased arrays
# at 2.5 MHz, linear arrays at 7.5 MHz; the LQ render is a cheaper one: lower frequency, narrower band, wider beam.
HQ_PULSES = {"curvilinear": Pulse(3.5, 0.6, 2.0, 60.0), "phased": Pulse(2.5, 0.6, 2.5, 70.0),
             "linear": Pulse(7.5, 0.6, 2.0, 20.0), "trapezoid": Pulse(7.5, 0.6, 2.0, 25.0)}
LQ_PULSES = {"curvilinear": Pulse(2.5, 0.4, 3.0, 60.0), "phased": Pulse(2.0, 0.4, 3.5, 70.0),
             "linear": Pulse(5.0, 0.4, 3.0, 20.0), "trapezoid": Pulse(5.0, 0.4, 3.0, 25.0)}


def rf_lines(amplitude: np.ndarray, depth_mm: np.ndarray, spacing_mm: np.ndarray, attenuation: np.ndarray,
             pulse: Pulse, step_mm: float) -> np.ndarray:
    """RF (samples × beams) of scatterer ``amplitude`` (echo × scatterer, already attenuated) at depths
    ``depth_mm`` (per sample) with beams ``spacing_mm`` apart (per sample); ``attenuation``: the round-trip
    attenuation reached at each sample, nepers per MHz (beam mean), which lowers the carrier."""
    n, rays = amplitude.shape
    centres = np.linspace(0, n - 1, pulse.bands)
    out = np.zeros_like(amplitude, dtype=np.float32)
    rows = np.arange(n, dtype=np.float64)
    for k, c in enumerate(centres):
        lo = centres[k - 1] if k > 0 else 0.0
        hi = centres[k + 1] if k < len(centres) - 1 else n - 1.0
        a, b = int(math.floor(lo)), int(math.ceil(hi)) + 1
        i = int(round(c))
        carrier = max(pulse.center_mhz - pulse.sigma_mhz ** 2 * attenuation[i], (1 - MAX_SHIFT) * pulse.center_mhz)
        axial = pulse.axial_kernel(step_mm, carrier)
        lateral = pulse.lateral_kernel(float(depth_mm[i]), carrier, float(spacing_mm[i]), rays)
        pad = len(axial) // 2
        s, e = max(0, a - pad), min(n, b + pad)
        formed = cv2.sepFilter2D(amplitude[s:e], cv2.CV_32F, lateral, axial, borderType=cv2.BORDER_CONSTANT)[a - s:b - s]
        r = rows[a:b]
        weight = np.where(r <= c, 1 - (c - r) / max(c - lo, 1e-9), 1 - (r - c) / max(hi - c, 1e-9))
        if k == 0:
            weight[r <= c] = 1.0
        if k == len(centres) - 1:
            weight[r >= c] = 1.0
        out[a:b] += np.clip(weight, 0, 1).astype(np.float32)[:, None] * formed
    return out


def band_noise(shape: tuple[int, int], sigma: float, pulse: Pulse, step_mm: float,
               rng: np.random.Generator) -> np.ndarray:
    """Electronic noise as the receiver passes it: white noise through the pulse's band, RMS ``sigma``."""
    white = rng.standard_normal(shape, dtype=np.float32)
    kernel = pulse.axial_kernel(step_mm, pulse.center_mhz)
    return sigma * cv2.sepFilter2D(white, cv2.CV_32F, np.ones(1, np.float32), kernel, borderType=cv2.BORDER_REFLECT)


def envelope(rf: np.ndarray, every: int) -> np.ndarray:
    """The detected envelope (Hilbert magnitude along each beam), averaged over ``every`` RF samples and kept at
    every ``every``-th: RF sample i × every is display sample i."""
    env = np.abs(hilbert(rf, axis=0)).astype(np.float32)
    if every > 1:
        env = uniform_filter1d(env, every, axis=0, mode="nearest")
    return env[::every]


def attenuation_gain(attenuation: np.ndarray, pulse: Pulse) -> np.ndarray:
    """The amplitude a Gaussian spectrum keeps after a round-trip attenuation of ``attenuation`` nepers per MHz."""
    s2 = pulse.sigma_mhz ** 2
    a = np.minimum(attenuation, MAX_SHIFT * pulse.center_mhz / s2)  # beyond, the spectrum would pass 0 MHz
    return np.exp(-(pulse.center_mhz * a - 0.5 * s2 * a ** 2)).astype(np.float32)
