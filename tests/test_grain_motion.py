"""Grain that moves with the tissue (issue 27, items 1–2): the measure that tells a tracking texture from one stuck to
the screen, the motion estimated from the input alone, and the stream grain that follows it."""
import cv2
import numpy as np
import pytest

from usnst.engines.beam_speckle import BeamSpeckle, BeamSpeckleConfig
from usnst.engines.tissue_motion import SLICE_MM, TissueMotion, pose_motion
from usnst.offline.temporal import merge_texture_motion, texture_motion
from usnst_stream.phantom import PhantomRenderer, with_marks

FPS, LAG = 25, 8


def _shift(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """The image moved by (dx, dy) px: what was at p is at p + (dx, dy)."""
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, m, image.shape[::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def test_a_shifted_texture_tracks_and_a_fixed_overlay_does_not():
    rng = np.random.default_rng(0)
    field = cv2.GaussianBlur(rng.standard_normal((128, 128)).astype(np.float32), (0, 0), 0.8)
    motion = np.zeros((128, 128, 2), np.float32)
    motion[..., 0], motion[..., 1] = 3.0, -2.0
    mask = np.ones((128, 128), bool)
    moving = texture_motion(field, _shift(field, 3, -2), motion, mask)
    assert moving["windows"] >= 16 and moving["following"] == 1.0
    assert moving["after_motion"] > 0.95 and abs(moving["at_zero"]) < 0.2
    stuck = texture_motion(field, field, motion, mask)  # the anatomy moved, the texture stayed on the screen
    assert stuck["following"] == 0.0 and stuck["at_zero"] > 0.99 and abs(stuck["after_motion"]) < 0.2
    boiling = texture_motion(field, cv2.GaussianBlur(rng.standard_normal((128, 128)).astype(np.float32), (0, 0), 0.8),
                             motion, mask)
    assert boiling["following"] < 0.2 and abs(boiling["after_motion"]) < 0.2 and abs(boiling["at_zero"]) < 0.2
    still = np.zeros_like(motion)  # no motion: following and staying cannot be told apart, no window counts
    assert texture_motion(field, field, still, mask)["windows"] == 0
    assert merge_texture_motion([moving, stuck])["following"] == 0.5


def test_the_phantom_knows_where_its_anatomy_went():
    renderer = PhantomRenderer(96, 96, seed=3)
    motion = renderer.displacement(0.0, LAG / FPS)
    first, later = renderer.segmentation(0.0), renderer.segmentation(LAG / FPS)
    ys, xs = np.mgrid[0:96, 0:96].astype(np.float32)
    seen = cv2.remap(later, xs + motion[..., 0], ys + motion[..., 1], cv2.INTER_NEAREST)
    both = (first > 0) & (seen > 0)
    assert np.abs(motion[..., 0]).mean() > 1.0  # the probe does move
    assert (seen[both] == first[both]).mean() > 0.97  # labels agree but for boundary pixels


def test_a_steadily_moving_frame_is_followed_a_stopped_one_holds_still_and_noise_is_not_motion():
    frame = PhantomRenderer(160, 160, seed=5).render(0.0).lq
    tracker = TissueMotion()
    assert np.array_equal(tracker.update(frame), np.eye(3))
    for k in range(1, 9):  # a probe moving steadily: the anatomy 1 px right and 0.5 px down per frame
        to_reference = tracker.update(_shift(frame, k, 0.5 * k))
    assert to_reference[:2, 2] == pytest.approx([-8, -4], abs=0.3)  # a pixel's tissue was (8, 4) back
    noisy = np.random.default_rng(1)
    jitter = lambda image: np.clip(image + noisy.normal(0, 0.01, image.shape).astype(np.float32), 0, 1)
    stopped = _shift(frame, 8, 4)
    settled = [tracker.update(jitter(stopped)).copy() for _ in range(6)]  # the probe stops; its frames stay noisy
    assert settled[-1][:2, 2] == pytest.approx([-8, -4], abs=0.3)
    assert all(np.array_equal(m, settled[0]) for m in settled)  # the grain holds still
    assert tracker.lost == 0
    paused = TissueMotion()
    paused.update(frame)
    for _ in range(5):  # a paused probe whose simulator adds electronic noise: the grain must not wander
        assert np.array_equal(paused.update(jitter(frame)), np.eye(3))


def test_a_new_view_starts_the_grain_afresh():
    tracker = TissueMotion()
    tracker.update(PhantomRenderer(160, 160, seed=5).render(0.0).lq)
    tracker.update(_shift(PhantomRenderer(160, 160, seed=5).render(0.0).lq, 2, 1))
    assert tracker.lost == 0 and not np.array_equal(tracker.to_reference, np.eye(3))
    tracker.update(PhantomRenderer(160, 160, seed=9).render(3.0).lq)  # the simulator cut to another scene
    assert tracker.lost == 1 and np.array_equal(tracker.to_reference, np.eye(3))


def _phantom_sequences(size: int, seeds: range):
    for seed in seeds:
        renderer = PhantomRenderer(size, size, seed=seed)
        frames = [renderer.render(k / FPS) for k in range(LAG + 1)]
        sector = cv2.erode((frames[0].seg > 0).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0  # grain is everywhere
        yield [f.lq for f in frames], renderer.displacement(0.0, LAG / FPS), sector


@pytest.mark.parametrize("anchored", [True, False])
def test_the_stream_grain_moves_with_the_tissue_and_a_paused_probe_stays_still(anchored):
    """The stage alone on a moving phantom probe (the LQ input as the net's output): anchored, the grain follows the
    anatomy (renewing in part as it goes, as a hand-held probe's does); drawn on the screen, it stays there."""
    results = []
    for lq, motion, mask in _phantom_sequences(160, range(50000, 50003)):
        stage = BeamSpeckle(BeamSpeckleConfig(), anchored=anchored)
        rng = np.random.default_rng(0)
        planes = [rng.standard_normal(stage.plane_shape[2:]).astype(np.float32) for _ in range(2)]
        out = [stage.apply(f, f, planes) for f in lq]
        results.append(texture_motion(out[0], out[-1], motion, mask))
        paused = [stage.apply(lq[-1], lq[-1], planes) for _ in range(3)]
        assert np.array_equal(paused[0], out[-1]) and np.array_equal(paused[1], paused[2])
    r = merge_texture_motion(results)
    assert r["windows"] >= 6
    if anchored:
        assert r["following"] >= 0.8 and r["after_motion"] > 0.15 and r["at_zero"] < 0.2
    else:
        assert r["following"] == 0.0 and r["at_zero"] > 0.6


def test_marks_beside_the_view_do_not_hold_the_grain_still():
    """Labels and a dot a display draws beside the view stay on the screen while the tissue moves; the motion is
    estimated from the view alone, so a marked stream's grain is placed as the unmarked stream's (the marks pulled
    the estimate towards no motion: 2 px of a 15-px sweep at 256²)."""
    renderer = PhantomRenderer(160, 160, seed=50001)
    lq = [renderer.render(k / FPS).lq for k in range(24)]
    stages = [BeamSpeckle(BeamSpeckleConfig(), anchored=True) for _ in range(2)]
    planes = [np.random.default_rng(0).standard_normal(stages[0].plane_shape[2:]).astype(np.float32) for _ in range(2)]
    for frame in lq:
        marked = with_marks(frame)
        assert (marked != frame).sum() > 40
        for stage, shown in zip(stages, (frame, marked)):
            stage.apply(shown, shown, planes)
    moved = stages[0].motion.to_reference
    assert np.hypot(*moved[:2, 2]) > 4  # the sweep moved the tissue
    assert np.allclose(stages[1].motion.to_reference, moved, atol=1e-6)


def _white_planes(stage: BeamSpeckle, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(stage.plane_shape).astype(np.float32) for _ in range(2)]


def _coherence(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(np.corrcoef(np.concatenate([x.ravel() for x in a]), np.concatenate([x.ravel() for x in b]))[0, 1])


def test_the_anchored_scatterers_renew_with_the_path_the_tissue_moved_and_a_still_probe_keeps_them():
    """Known answer: a frame moved 4 px keeps exp(−4 / (renew · depth)) of the field's coherence; a still frame keeps
    it all (the same field, so the same output); a cut to another scene draws other scatterers (coherence ~0)."""
    frame = PhantomRenderer(160, 160, seed=5).render(0.0).lq
    stage = BeamSpeckle(BeamSpeckleConfig(), anchored=True, renew=0.05)
    planes = _white_planes(stage)
    first = stage.apply(frame, frame, planes)
    start = stage._field
    assert start is planes
    assert np.array_equal(stage.apply(frame, frame, planes), first)  # paused: nothing renewed
    stage.apply(_shift(frame, 4, 0), _shift(frame, 4, 0), planes)
    moved = stage.motion.to_reference[:2, 2]
    expected = np.exp(-np.hypot(*moved) / (0.05 * stage.fan.depth_px))
    assert np.hypot(*moved) == pytest.approx(4, abs=0.4) and 0.3 < expected < 0.9
    assert _coherence(stage._field, start) == pytest.approx(expected, abs=0.02)
    [np.testing.assert_allclose(f.std(), 1.0, atol=0.02) for f in stage._field]  # still unit white noise
    kept = stage._field
    stage.apply(_shift(frame, 4, 0), _shift(frame, 4, 0), planes)
    assert stage._field is kept
    other = PhantomRenderer(160, 160, seed=9).render(3.0).lq
    stage.apply(other, other, planes)
    assert stage.motion.lost == 1 and abs(_coherence(stage._field, kept)) < 0.02


def test_with_poses_the_scatterers_stay_in_plane_and_renew_off_the_slice():
    """Placed by poses, the simulator's tissue is fixed in its world: sliding in plane keeps every scatterer; leaving
    the slice draws other ones."""
    renderer = PhantomRenderer(160, 160, seed=50001)
    stage = BeamSpeckle(BeamSpeckleConfig(), anchored=True, renew=0.05)
    planes = _white_planes(stage)
    for t in (0.0, 0.2, 0.4):
        stage.apply(renderer.render(t).lq, renderer.render(t).lq, planes, renderer.image_to_world(t))
    assert np.abs(stage.motion.to_reference[:2, 2]).max() > 2 and stage._field is planes
    lifted = renderer.image_to_world(0.4)
    lifted[2, 3] += 2 * SLICE_MM
    stage.apply(renderer.render(0.4).lq, renderer.render(0.4).lq, planes, lifted)
    assert abs(_coherence(stage._field, planes)) < 0.02


def test_the_motion_between_two_poses_is_the_phantoms_true_motion():
    renderer = PhantomRenderer(120, 160, seed=3)
    t0, t1 = 0.3, 1.4
    to_reference, off_plane = pose_motion(renderer.image_to_world(t0), renderer.image_to_world(t1), (120, 160))
    moved = renderer.displacement(t0, t1)  # what is seen at pixel q at t0 is seen at q + moved(q) at t1
    ys, xs = np.mgrid[0:120, 0:160].astype(np.float64)
    later = np.stack([xs + moved[..., 0], ys + moved[..., 1], np.ones_like(xs)]).reshape(3, -1)
    back = to_reference @ later
    assert np.abs(moved).max() > 5  # the probe moved
    assert np.abs(back[0] - xs.ravel()).max() < 1e-3 and np.abs(back[1] - ys.ravel()).max() < 1e-3
    assert off_plane == pytest.approx(0.0, abs=1e-9)
    tilted = renderer.image_to_world(t0).copy()
    tilted[2, 1] = 0.05 * renderer.pixel_mm  # rows leave the plane: the frame's bottom is off it by 0.05 row each
    assert pose_motion(renderer.image_to_world(t0), tilted, (120, 160))[1] == pytest.approx(
        0.05 * renderer.pixel_mm * 119)


def test_with_poses_the_grain_follows_the_probe_exactly_and_a_new_plane_draws_new_grain():
    """Poses from the simulator: the stage places its grain by them (no estimate), a paused probe stays still, a
    probe that leaves the slice images other scatterers."""
    results = []
    for seed in range(50000, 50003):
        renderer = PhantomRenderer(160, 160, seed=seed)
        times = [k / FPS for k in range(LAG + 1)]
        lq = [renderer.render(t).lq for t in times]
        mask = cv2.erode((renderer.segmentation(0.0) > 0).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        stage = BeamSpeckle(BeamSpeckleConfig(), anchored=True)
        rng = np.random.default_rng(0)
        planes = [rng.standard_normal(stage.plane_shape[2:]).astype(np.float32) for _ in range(2)]
        out = [stage.apply(f, f, planes, renderer.image_to_world(t)) for f, t in zip(lq, times)]
        results.append(texture_motion(out[0], out[-1], renderer.displacement(0.0, LAG / FPS), mask))
        assert stage.motion.lost == 0
        paused = stage.apply(lq[-1], lq[-1], planes, renderer.image_to_world(times[-1]))
        assert np.array_equal(paused, out[-1])
        lifted = renderer.image_to_world(times[-1])
        lifted[2, 3] += 2 * SLICE_MM  # the same picture, two slice thicknesses away: other scatterers
        assert not np.allclose(stage.apply(lq[-1], lq[-1], planes, lifted), out[-1], atol=0.02)
        assert np.array_equal(stage.motion.to_reference, np.eye(3))  # the grain started afresh there
    r = merge_texture_motion(results)
    assert r["windows"] >= 6 and r["following"] >= 0.9 and r["after_motion"] > 0.3 and r["at_zero"] < 0.2


def test_the_python_api_takes_the_simulators_pose_and_refuses_one_that_is_not_a_pose():
    from usnst.api import Stylizer

    stylizer = Stylizer("lq2hq_fast", noise="fixed", seed=2, threads=1)
    renderer = PhantomRenderer(128, 128, seed=50001)
    times = [0.0, LAG / FPS]
    out = [stylizer((renderer.render(t).lq * 255).astype(np.uint8), pose=renderer.image_to_world(t)) for t in times]
    mask = cv2.erode((renderer.segmentation(0.0) > 0).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    r = texture_motion(out[0].astype(np.float32), out[1].astype(np.float32), renderer.displacement(*times), mask)
    assert r["windows"] >= 2 and r["following"] >= 0.8
    with pytest.raises(ValueError, match="span a plane"):
        stylizer(np.zeros((32, 32), np.uint8), pose=np.zeros((4, 4)) + np.diag([0, 0, 0, 1.0]))


def test_the_python_api_takes_a_pixel_spacing_without_a_pose_and_sizes_the_grain_as_the_pose_would():
    """A shallow linear view told its spacing gets the pose's grain size (a still frame: the same pixels), and the
    grain then differs from the one sized in the model's own samples."""
    from usnst.api import Stylizer
    from usnst_stream.phantom import probe

    renderer = PhantomRenderer(128, 128, seed=50001, geometry=probe("linear"))
    frame = (renderer.render(0.0).lq * 255).astype(np.uint8)
    run = lambda **where: Stylizer("lq2hq_fast", noise="frame", seed=2, threads=1)(frame, **where)
    spaced = run(spacing_mm=(renderer.pixel_mm, renderer.pixel_mm))
    assert np.array_equal(spaced, run(pose=renderer.image_to_world(0.0)))
    assert np.abs(spaced.astype(int) - run().astype(int)).mean() > 1.0
    for bad in ((0.1, float("nan")), (0.1,), ("0.1", "0.1")):
        with pytest.raises(ValueError, match="spacing_mm must be two finite numbers"):
            run(spacing_mm=bad)


@pytest.mark.parametrize("posed", [True, False])
@pytest.mark.parametrize("kind", ["linear", "trapezoid"])
def test_the_grain_of_a_linear_arrays_view_moves_with_its_tissue(kind, posed):
    """With poses the band's and the trapezoid's anchored grain follows as the fan's does. Estimated from the frames
    alone it follows too: the view's straight sides stay on the screen while the tissue slides past them, and with a
    fan's margin along them the estimate fell short (the grain followed in 0 % of a linear view's windows and 23 % of
    a trapezoid's); a linear array's view keeps a wider one."""
    from usnst_stream.phantom import probe

    renderer = PhantomRenderer(160, 160, seed=50002, geometry=probe(kind))
    times = [k / FPS for k in range(LAG + 1)]
    lq = [renderer.render(t).lq for t in times]
    mask = cv2.erode(renderer.in_sector.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    stage = BeamSpeckle(BeamSpeckleConfig(), anchored=True, renew=0)  # the estimate alone: scatterers kept
    rng = np.random.default_rng(0)
    planes = [rng.standard_normal(stage.plane_shape[2:]).astype(np.float32) for _ in range(2)]
    out = [stage.apply(f, f, planes, renderer.image_to_world(t) if posed else None) for f, t in zip(lq, times)]
    r = texture_motion(out[0], out[-1], renderer.displacement(0.0, LAG / FPS), mask)
    assert r["windows"] >= 4 and r["following"] >= 0.8 and r["at_zero"] < 0.3
    assert stage.motion.lost == 0  # its speckle redrawn frame to frame is not a new view


@pytest.mark.parametrize("seed", [50004, 50015])
def test_a_view_whose_speckle_is_redrawn_each_frame_keeps_its_grain_on_the_tissue(seed):
    """A linear array's view of plain tissue: its own speckle decorrelates from frame to frame (the match reads
    0.55–0.9). Taken as new views (a match below 0.6) these two scenes' grain started afresh mid-sweep and followed
    in 0 % of windows."""
    from usnst_stream.phantom import probe

    renderer = PhantomRenderer(128, 128, seed=seed, geometry=probe("linear"))
    lq = [renderer.render(k / FPS).lq for k in range(LAG + 1)]
    mask = cv2.erode(renderer.in_sector.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    stage = BeamSpeckle(BeamSpeckleConfig(), anchored=True, renew=0)  # the estimate alone: scatterers kept
    rng = np.random.default_rng(0)
    planes = [rng.standard_normal(stage.plane_shape[2:]).astype(np.float32) for _ in range(2)]
    out = [stage.apply(f, f, planes) for f in lq]
    r = texture_motion(out[0], out[-1], renderer.displacement(0.0, LAG / FPS), mask)
    assert stage.motion.lost == 0 and r["windows"] >= 40 and r["following"] >= 0.9


def test_a_long_sweep_of_renewals_keeps_the_grains_statistics():
    """Mixing fresh scatterers into the complex field keeps it unit white noise, so the grain after thirty moving
    frames measures as the first frame's: the same strength and the same speckle size along and across the beams."""
    from usnst.offline.realism import speckle_fwhm

    renderer = PhantomRenderer(192, 192, seed=50003)
    stage = BeamSpeckle(BeamSpeckleConfig(), anchored=True, renew=0.05)  # the phantom's own speckle never renews
    planes = _white_planes(stage)
    grains = []
    for k in range(31):
        lq = renderer.render(k / FPS).lq
        flat = np.full_like(lq, 0.5) * (lq > 0.02)  # a flat net output: what the stage adds is the grain alone
        grains.append(stage.apply(flat, lq, planes) - flat)
    assert stage.motion.lost == 0 and _coherence(stage._field, planes) < 0.3  # most of the scatterers were renewed
    inside = cv2.erode((renderer.segmentation(0.0) > 0).astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
    first, last = grains[0], grains[-1]
    assert last[inside].std() == pytest.approx(first[inside].std(), rel=0.05)
    size = lambda g: np.array(speckle_fwhm(g, inside))
    np.testing.assert_allclose(size(last), size(first), rtol=0.08)


def test_with_poses_a_probe_tilting_out_of_plane_renews_its_scatterers_gradually():
    """Known answer: a frame 0.3 mm off the last one's plane keeps exp(−0.3 / SLICE_MM) of the field's coherence; the
    same pose again keeps it all."""
    renderer = PhantomRenderer(160, 160, seed=50001)
    frame = renderer.render(0.0).lq
    stage = BeamSpeckle(BeamSpeckleConfig(), anchored=True)
    planes = _white_planes(stage)
    pose = renderer.image_to_world(0.0)
    stage.apply(frame, frame, planes, pose)
    lifted = pose.copy()
    lifted[:3, 3] += 0.3 * np.cross(pose[:3, 0], pose[:3, 1]) / np.linalg.norm(np.cross(pose[:3, 0], pose[:3, 1]))
    stage.apply(frame, frame, planes, lifted)
    assert stage.motion.starts == 1 and stage.motion.off_plane_step_mm == pytest.approx(0.3)
    assert _coherence(stage._field, planes) == pytest.approx(np.exp(-0.3 / SLICE_MM), abs=0.02)
    kept = stage._field
    stage.apply(frame, frame, planes, lifted)
    assert stage._field is kept
