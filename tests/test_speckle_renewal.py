"""The stage's scatterers renew as far as the input's own speckle does (engines.speckle_renewal): known answers on
frames whose speckle decorrelates at a set rate, and the stage's field on a world-fixed and a renewing input."""
import math

import cv2
import numpy as np
import pytest

from usnst.engines.beam_speckle import BeamSpeckle, BeamSpeckleConfig
from usnst.engines.speckle_renewal import SpeckleRenewal
from usnst_stream.phantom import PhantomRenderer

SIDE, STEP = 128, 1.0  # px, px of tissue path per frame


def _field(rng, shape) -> np.ndarray:
    return cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), 1.0)


def _sweep(length: float | None, noise: float, frames: int = 40, seed: int = 0, speckle: float = 0.08):
    """Frames of a view sliding right over tissue by STEP px a frame, and each frame's motion to the first frame's
    pixels: the tissue's speckle keeps exp(−path / length) of its coherence (None: it never renews), plus
    ``noise`` of electronic noise drawn anew every frame (as a share of the speckle's strength)."""
    rng = np.random.default_rng(seed)
    width = SIDE + int(STEP * frames) + 8
    tissue = _field(rng, (SIDE, width))
    keep = 1.0 if length is None else math.exp(-STEP / length)
    out = []
    for t in range(frames):
        if t:
            tissue = keep * tissue + math.sqrt(1 - keep * keep) * _field(rng, tissue.shape)
        x0 = int(STEP * t)
        speckled = tissue[:, x0:x0 + SIDE] + noise * _field(rng, (SIDE, SIDE))
        frame = np.clip(0.5 + speckle * speckled / speckled.std(), 0.05, 1.0).astype(np.float32)
        to_reference = np.array([[1.0, 0, STEP * t], [0, 1.0, 0], [0, 0, 1.0]])  # pixel x now was x + t·STEP at first
        out.append((frame, to_reference))
    return out


@pytest.mark.parametrize("length", [4.0, 12.0])
def test_the_rate_is_the_inputs_own_renewal_whatever_its_per_frame_noise(length):
    """Known answer: speckle that keeps exp(−path / L) of its coherence gives a rate of 1/L, with or without a
    per-frame noise that lowers every correlation alike."""
    for noise in (0.0, 0.7):
        renewal = SpeckleRenewal()
        for frame, to_reference in _sweep(length, noise):
            renewal.update(frame, to_reference)
        assert renewal.rate == pytest.approx(1 / length, rel=0.25), noise


def test_speckle_fixed_in_the_tissue_a_frame_without_speckle_and_boiling_speckle_renew_nothing():
    renewal = SpeckleRenewal()
    for frame, to_reference in _sweep(None, 0.7):  # world-fixed scatterers, per-frame noise
        renewal.update(frame, to_reference)
    assert renewal.rate < 0.01  # a path of 1/e over 100 px: kept for the view's whole width
    flat = SpeckleRenewal()
    for t in range(10):  # a smooth simulator: nothing to measure, so nothing renewed
        flat.update(np.full((SIDE, SIDE), 0.5, np.float32), np.array([[1.0, 0, t], [0, 1, 0], [0, 0, 1]]))
    assert flat.rate == 0.0
    boiling, rng = SpeckleRenewal(), np.random.default_rng(3)
    for t in range(20):  # speckle drawn anew every frame: nothing follows the tissue, so nothing to renew
        frame = np.clip(0.5 + 0.3 * _field(rng, (SIDE, SIDE)), 0.05, 1).astype(np.float32)
        boiling.update(frame, np.array([[1.0, 0, t], [0, 1, 0], [0, 0, 1]]))
    assert boiling.shown(1 / 6.0) == 0.0


def test_a_still_probe_teaches_nothing_and_a_new_view_forgets_its_frames_not_its_rate():
    renewal = SpeckleRenewal()
    sweep = _sweep(4.0, 0.0)
    for frame, to_reference in sweep[:20]:
        renewal.update(frame, to_reference)
    learnt = renewal.rate
    for _ in range(5):  # paused: the same motion again, a new noise draw each frame
        renewal.update(sweep[19][0] + 0.01 * np.float32(np.random.default_rng(1).standard_normal((SIDE, SIDE))),
                       sweep[19][1])
    assert renewal.rate == learnt > 0.1
    renewal.clear()
    assert renewal.rate == learnt


def _stage_on(frames: list[tuple[np.ndarray, np.ndarray]]) -> tuple[BeamSpeckle, list[np.ndarray]]:
    stage = BeamSpeckle(BeamSpeckleConfig(), anchored=True)
    rng = np.random.default_rng(0)
    planes = [rng.standard_normal(stage.plane_shape).astype(np.float32) for _ in range(2)]
    for frame in frames:
        stage.apply(frame, frame, planes)
    return stage, planes


def _coherence(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(np.corrcoef(np.concatenate([x.ravel() for x in a]), np.concatenate([x.ravel() for x in b]))[0, 1])


def test_the_stage_keeps_a_world_fixed_simulators_scatterers_and_renews_a_hand_held_scanners():
    """On a phantom sweep (scatterers fixed in its world, a probe in plane) the stage's scatterers stay as drawn; on
    the same sweep with its speckle renewing as it goes (a fifth of a neper a frame, a hand-held probe's), most are
    replaced."""
    renderer = PhantomRenderer(160, 160, seed=50003)
    frames = [renderer.render(k / 25).lq for k in range(40)]
    stage, planes = _stage_on(frames)
    assert stage.motion.lost == 0 and np.hypot(*stage.motion.to_reference[:2, 2]) > 4  # the tissue moved
    assert stage._field is planes and stage.renewal.rate < 0.01
    rng = np.random.default_rng(2)
    renewing, noise, keep = [], _field(rng, (160, 160)), math.exp(-0.2)
    for frame in frames:  # the phantom's anatomy, its speckle band replaced by one that renews as it moves
        noise = keep * noise + math.sqrt(1 - keep * keep) * _field(rng, noise.shape)
        renewing.append(np.where(frame > 0.02, np.clip(cv2.GaussianBlur(frame, (0, 0), 3.0) + 0.2 * noise, 0.03, 1),
                                 0).astype(np.float32))
    stage, planes = _stage_on(renewing)
    assert stage.motion.lost == 0 and stage.renewal.rate > 0.1
    assert _coherence(stage._field, planes) < 0.3


def test_an_input_renewing_like_a_scanner_shows_all_its_renewal_and_a_world_fixed_one_none():
    scanner_rate = 1 / 6.0  # a hand-held scanner's 1/e over 6 px of path
    shown = {}
    for length in (None, 24.0, 6.0):
        renewal = SpeckleRenewal()
        assert renewal.shown(scanner_rate) == 0.0  # before any evidence: the grain stays with its tissue
        for frame, to_reference in _sweep(length, 0.5):
            renewal.update(frame, to_reference)
        shown[length] = renewal.shown(scanner_rate)
    assert shown[None] < 0.05 and shown[6.0] == 1.0
    assert shown[24.0] == pytest.approx(6.0 / 24.0 / 0.5, abs=0.15)  # a quarter of the rate: half of it shown
