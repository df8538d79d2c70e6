"""The phantom's second image formation (usnst_stream.rf_formation) and its abdominal anatomy: known answers for the
pulse, the beam and the attenuation, and the rendered frames' plain physics."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy.signal import hilbert

from usnst.engines.acoustics import KIDNEY, LIVER, MEDULLA, SINUS, VESSEL
from usnst_stream.phantom import PhantomRenderer, probe
from usnst_stream.rf_formation import SOUND_MM_PER_US, Pulse, attenuation_gain, rf_lines


def _fwhm(profile: np.ndarray) -> float:
    """Width in samples of a single-peaked profile at half its maximum (linear interpolation at the edges)."""
    half = profile.max() / 2
    above = np.flatnonzero(profile >= half)
    lo, hi = above[0], above[-1]
    left = lo - (profile[lo] - half) / (profile[lo] - profile[lo - 1])
    right = hi + (profile[hi] - half) / (profile[hi] - profile[hi + 1])
    return float(right - left)


def test_the_pulse_has_its_bandwidths_envelope_and_its_carrier():
    pulse = Pulse(center_mhz=5.0, bandwidth=0.6)
    step = pulse.step_mm()
    kernel = pulse.axial_kernel(step, 5.0)
    envelope = np.abs(hilbert(np.pad(kernel, 64)))
    assert _fwhm(envelope) * step == pytest.approx(2 * math.sqrt(2 * math.log(2)) * pulse.sigma_mm, rel=0.05)
    spectrum = np.abs(np.fft.rfft(kernel, 4096))
    cycles_per_mm = np.fft.rfftfreq(4096, step)[spectrum.argmax()]
    assert cycles_per_mm * SOUND_MM_PER_US / 2 == pytest.approx(5.0, rel=0.03)  # round trip: 2 f / c per mm


def test_the_beam_is_sinc_squared_at_the_focus_with_side_lobes_at_minus_26_db():
    pulse = Pulse(center_mhz=3.5, f_number=2.0, focus_mm=60.0)
    spacing = 0.05
    kernel = pulse.lateral_kernel(60.0, 3.5, spacing, rays=4096)
    centre = len(kernel) // 2
    null = SOUND_MM_PER_US / 3.5 * 2.0 / spacing  # λ F in beams
    assert abs(kernel[centre + int(round(null))]) < 0.01 * kernel[centre]
    lobe = np.abs(kernel[centre + int(null * 1.2): centre + int(null * 1.9)]).max() / kernel[centre]
    assert 20 * math.log10(lobe) == pytest.approx(-26.5, abs=1.5)
    deep = pulse.lateral_kernel(120.0, 3.5, spacing, rays=4096)  # defocused transmit: the receive's −13 dB lobes
    c = len(deep) // 2
    deep_lobe = np.abs(deep[c + int(null * 1.2): c + int(null * 1.9)]).max() / deep[c]
    assert deep_lobe > 2 * lobe


def test_attenuation_lowers_the_carrier_by_sigma_squared_times_the_loss():
    pulse = Pulse(center_mhz=5.0, bandwidth=0.8, bands=8)
    step, rays, n = pulse.step_mm(), 64, 4000
    depth = np.arange(n) * step
    loss = depth * 0.005  # nepers per MHz reached at each sample (the carrier falls ~1.3 MHz)
    amplitude = np.random.default_rng(1).standard_normal((n, rays)).astype(np.float32)
    rf = rf_lines(amplitude, depth, np.full(n, 0.3), loss, pulse, step)

    def carrier(rows):
        power = (np.abs(np.fft.rfft(rf[rows], axis=0)) ** 2).mean(axis=1)
        f = np.fft.rfftfreq(len(rf[rows]), step) * SOUND_MM_PER_US / 2
        return float((power * f).sum() / power.sum())

    shallow, deep = slice(0, 400), slice(n - 400, n)
    expected_drop = pulse.sigma_mhz ** 2 * (loss[deep].mean() - loss[shallow].mean())
    assert carrier(shallow) - carrier(deep) == pytest.approx(expected_drop, rel=0.15)
    assert attenuation_gain(np.array([0.0, 0.5]), pulse)[1] < 1.0


def test_abdominal_frames_show_their_organs_as_a_scanner_would():
    r = PhantomRenderer(256, 256, seed=11, formation="rf", anatomy="abdominal", geometry=probe("curvilinear"))
    s = r.render(0.0)
    present = set(np.unique(s.seg))
    assert {LIVER, VESSEL, KIDNEY, SINUS} <= present
    mean = lambda label: float(s.hq[s.seg == label].mean())
    assert mean(VESSEL) < 0.5 * mean(LIVER)  # anechoic
    assert mean(SINUS) > mean(KIDNEY)  # the bright sinus fat in a hypoechoic cortex
    if MEDULLA in present:
        assert mean(MEDULLA) < mean(KIDNEY)
    lit = s.seg > 0
    assert (s.hq[lit] > 0).mean() > 0.95 and (s.hq[~lit] == 0).all()


@pytest.mark.parametrize("kind", ["linear", "phased", "trapezoid"])
def test_every_probe_renders_the_second_formation_with_hq_finer_than_lq(kind):
    from usnst.offline.realism import speckle_fwhm, tissue_mask

    s = PhantomRenderer(192, 192, seed=5, formation="rf", anatomy="abdominal", geometry=probe(kind)).render(0.0)
    mask = tissue_mask(None, s.seg)
    assert mask.sum() > 1000
    hq, lq = (speckle_fwhm(np.round(img * 255), mask) for img in (s.hq, s.lq))
    assert hq[0] < lq[0] and hq[1] <= lq[1] * 1.05  # axial finer (wider band), lateral no coarser


def test_the_first_formation_refuses_pulses_and_unknown_choices_are_named():
    with pytest.raises(ValueError, match="gaussian formation has none"):
        PhantomRenderer(32, 32, pulses=(Pulse(), Pulse()))
    with pytest.raises(ValueError, match="formation must be one of"):
        PhantomRenderer(32, 32, formation="field2")
    with pytest.raises(ValueError, match="anatomy must be one of"):
        PhantomRenderer(32, 32, anatomy="cardiac")


def test_phantom_command_writes_and_records_the_formation_and_anatomy(tmp_path):
    out = tmp_path / "rf"
    cmd = [sys.executable, "-m", "usnst", "phantom", "--out", str(out), "-n", "2", "--size", "48",
           "--formation", "rf", "--anatomy", "abdominal", "--settings", "varied"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(list(out.glob("phantom_*.png"))) == 2
    record = json.loads((out / "phantoms.json").read_text())
    assert record["formation"] == "rf" and record["anatomy"] == "abdominal"
    again = subprocess.run(cmd[:-6] + ["--settings", "varied"], capture_output=True, text=True, timeout=300)
    assert again.returncode != 0 and "other settings" in again.stderr  # the first formation over them: refused
