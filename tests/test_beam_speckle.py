"""The beam-speckle stage: the fan it fits, the grain it forms, the engines that run it and the fit to target frames."""
import math
from dataclasses import replace

import cv2
import numpy as np
import pytest
from conftest import tiny_net

from usnst.engines.acoustics import ECHO_LEVEL
from usnst.engines.base import EngineOptions
from usnst.engines.beam_speckle import (
    META_KEY,
    Band,
    BeamSpeckle,
    BeamSpeckleConfig,
    Fan,
    NoFan,
    Resampled,
    echo_hull,
    echo_region,
    fit_fan,
)
from usnst.engines.checkpoint import save_checkpoint
from usnst.engines.registry import build_artifact, load_engine
from usnst.offline.realism import speckle_fwhm, tissue_mask
from usnst.offline.speckle_fit import fit_beam_speckle
from usnst_io.media import to_uint8
from usnst_stream.phantom import PROBES, PhantomRenderer, acquisition, probe, with_marks


def true_fan(renderer: PhantomRenderer) -> tuple[float, float, float, float, float]:
    """(apex x, apex y, r0, r1, half angle) of a phantom frame, in pixels and radians, from its renderer."""
    g, scale, h, w = renderer.geometry, renderer.pixel_mm, renderer.height, renderer.width
    apex_y = -0.5 - (g.depth_mm - h * scale) / (2 * scale)
    return (w - 1) / 2, apex_y, g.start_mm / scale, g.depth_mm / scale, math.radians(g.sector_deg) / 2


@pytest.mark.parametrize("settings,size", [("default", (160, 160)), ("varied", (144, 192)), ("outside", (192, 160))])
def test_the_fan_of_a_phantom_frame_is_recovered(settings, size):
    for seed in (3, 4):
        renderer = PhantomRenderer(*size, seed=seed, **acquisition(settings, np.random.default_rng([seed, 4242])))
        ax, ay, r0, r1, half = true_fan(renderer)
        fan = fit_fan(renderer.render(0.0).lq)  # from the input: fluid may render black inside the sector
        assert abs(fan.apex_x - ax) < 1.0 and abs(fan.apex_y - ay) < 2.0
        assert abs(fan.r1 - r1) < 3.0 and abs(fan.r0 - r0) < 2.0
        assert abs(fan.theta0 + half) < math.radians(0.5) and abs(fan.theta1 - half) < math.radians(0.5)


@pytest.mark.parametrize("r0", [5.0, 40.0])
def test_a_sector_wider_than_the_frame_is_fitted_from_the_sides_it_shows(r0):
    """A zoomed phased view runs off the frame's sides below some depth: those rows show the frame's edge, and a
    fit through them was refused (IoU 0.87–0.89); the sides above them give the sector."""
    fan = Fan(100.0, -0.7 * r0, r0, 260.0, -math.radians(45), math.radians(45))
    inside = fan.polar((256, 200), 2, 2)[2] <= 0
    frame = np.where(inside, 0.3 + 0.4 * np.random.default_rng(0).random((256, 200)), 0).astype(np.float32)
    fit = fit_fan(frame)
    assert abs(fit.apex_x - 100) < 1 and abs(fit.apex_y + 0.7 * r0) < 2 and abs(fit.r1 - 260) < 3
    assert abs(fit.theta0 - fan.theta0) < math.radians(0.5) and abs(fit.theta1 - fan.theta1) < math.radians(0.5)


def test_a_sectors_near_arc_is_fitted_where_the_echo_starts_not_at_the_hulls_chord_across_it():
    """The convex hull's top is the chord between the near arc's ends, 7 px nearer the apex than the arc's middle
    for this fan: fitted there, the stage lit rows above the probe's face that the simulator shows black."""
    fan = Fan(100.0, -20.0, 40.0, 220.0, -math.radians(35), math.radians(35))
    inside = fan.polar((256, 200), 2, 2)[2] <= 0
    frame = np.where(inside, 0.3 + 0.4 * np.random.default_rng(0).random((256, 200)), 0).astype(np.float32)
    fit = fit_fan(frame)
    assert fit.top is None and abs(fit.r0 - 40) < 1
    out = BeamSpeckle(BeamSpeckleConfig(rays=64, samples=160)).apply(frame, frame, None)
    assert np.all(out[~cv2.dilate(inside.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)] == 0)


def test_frames_without_a_view_to_fit_are_refused_with_the_reason_and_never_given_an_absurd_fit():
    with pytest.raises(NoFan, match="no imaging sector"):
        fit_fan(np.zeros((64, 64), np.float32))
    ys, xs = np.mgrid[0:96, 0:96]
    disc = (np.hypot(xs - 48, ys - 48) < 40).astype(np.float32) * 0.5  # no probe images a disc
    with pytest.raises(NoFan, match="no fan or band fits"):
        fit_fan(disc)
    slanted = ((xs - 0.5 * ys > 10) & (xs - 0.5 * ys < 40) & (ys > 5) & (ys < 90)).astype(np.float32) * 0.5
    with pytest.raises(NoFan, match="slanted"):
        fit_fan(slanted)
    ys, xs = np.mgrid[0:128, 0:160]
    crop = np.where((xs > 100) & (ys < 40) & (xs - 100 > 1.5 * ys), 0.0, 0.5).astype(np.float32)  # a view cropped
    with pytest.raises(NoFan, match="leans to one side"):  # inside, one corner dark: fitted, it made a fan from
        fit_fan(crop)  # near a corner of the frame
    stage = BeamSpeckle(BeamSpeckleConfig())
    planes = [np.zeros(stage.plane_shape[2:], np.float32)] * 2
    out = stage.apply(disc, disc, planes)  # counted, passed through inside its echo region
    assert stage.skipped == 1 and np.array_equal(out > 0, cv2.dilate((disc > 0).astype(np.uint8), np.ones((5, 5))) > 0)


@pytest.mark.parametrize("kind", ["phased", "linear"])
def test_a_far_field_too_dim_to_light_the_views_corners_keeps_its_view_and_its_image_ends_with_the_echo(kind):
    """A real scanner's far field can fade before the view's deep corners (a cardiac sector, a linear array over an
    anechoic phantom): the view is still fitted, and no grain is drawn beyond the echo."""
    renderer = PhantomRenderer(128, 128, seed=4, geometry=probe(kind))
    frame = renderer.render(0.0).lq
    whole = fit_fan(frame)
    assert not whole.within_echo  # a view its echo fills: as before
    ray, depth, _ = whole.polar(frame.shape, 3, 2)  # ray 0…2 across the beams, depth 0…1 along them
    corners = np.abs(ray - 1) + 2 * (depth - 0.6) > 1.0  # the deep corners go dark, as a fading far field does
    dim = np.where(corners, 0.0, frame).astype(np.float32)
    view = fit_fan(dim)
    assert view.within_echo
    if kind == "linear":
        assert replace(view, within_echo=False).close_to(whole, px=3.0)  # the same beams
    else:  # the same beams, the dark corners' chord taken for a flat bottom
        assert replace(view, within_echo=False, bottom=None).close_to(whole, px=3.0, rad=math.radians(3))
    stage = BeamSpeckle(BeamSpeckleConfig())
    rng = np.random.default_rng(0)
    planes = [rng.standard_normal(stage.plane_shape[2:]).astype(np.float32) for _ in range(2)]
    out = stage.apply(cv2.GaussianBlur(dim, (0, 0), 3), dim, planes)
    assert stage.skipped == 0
    hull = np.zeros((128, 128), np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(cv2.findNonZero((dim > ECHO_LEVEL).astype(np.uint8))), 1)
    assert out[hull == 0].max() == 0 and (out[cv2.erode(hull, np.ones((9, 9), np.uint8)) > 0] > 0).mean() > 0.95
    stage.apply(cv2.GaussianBlur(frame, (0, 0), 3), frame, planes)  # a gain raised mid-stream lights the corners:
    out = stage.apply(cv2.GaussianBlur(frame, (0, 0), 3), frame, planes)  # shown, not cut away with the old image
    assert (out[corners & (frame > ECHO_LEVEL)] > 0).mean() > 0.9
    ys, xs = np.mgrid[0:96, 0:96]
    deep_disc = (np.hypot(xs - 48, ys - 48) < 40).astype(np.float32) * 0.5  # excess near the apex: still refused
    with pytest.raises(NoFan, match="no fan or band fits"):
        fit_fan(deep_disc)


@pytest.mark.parametrize("bend_row, flatter", [(45, 0.2), (45, 0.35), (55, 0.2)])
def test_a_sector_whose_sides_bend_below_their_straight_part_is_fitted_from_that_part(bend_row, flatter):
    """A display that cuts a sector's corners (a real cardiac view) bends its sides inward below a straight part:
    the beams are the straight part's (fitted over every row, they made a narrow fan from an apex far above, or no fit
    at all)."""
    frame = PhantomRenderer(128, 128, seed=4, geometry=probe("phased")).render(0.0).lq
    whole = fit_fan(frame)
    ys, xs = np.mgrid[0:128, 0:128].astype(np.float32)
    half = np.where(ys < bend_row, ys - whole.apex_y, bend_row - whole.apex_y + flatter * (ys - bend_row))
    view = fit_fan(np.where(np.abs(xs - whole.apex_x) > half, 0.0, frame).astype(np.float32))
    assert abs(view.apex_x - whole.apex_x) < 1 and abs(view.apex_y - whole.apex_y) < 3
    assert abs(view.theta0 - whole.theta0) < math.radians(4) and abs(view.theta1 - whole.theta1) < math.radians(4)


@pytest.mark.parametrize("kind", [None, *PROBES])
def test_marks_drawn_beside_the_view_leave_its_fit_as_it_was(kind):
    """Labels, an orientation dot and depth ticks beside the view (4 px or more from its echo) are not echo of the
    view: every probe kind's fit is the one without them (they joined the echo's hull, and a sector with a label in
    a corner was refused), and the output shows them as they were sent."""
    renderer = PhantomRenderer(192, 192, seed=4, **({} if kind is None else {"geometry": probe(kind)}))
    frame = renderer.render(0.0).lq
    marked = with_marks(frame)
    drawn = marked != frame
    assert drawn.sum() > 40  # marks this view leaves room for
    assert fit_fan(marked).close_to(fit_fan(frame))
    stage = BeamSpeckle(BeamSpeckleConfig())
    out = stage.apply(marked, marked, None)
    assert stage.skipped == 0 and not stage._inside[drawn].any()  # grain in the view, none on the marks
    assert np.array_equal(out[drawn], marked[drawn])  # the marks shown as the sender drew them


def test_a_mark_inside_a_curved_faces_hull_is_not_taken_for_its_near_arc():
    """A curved array's face bulges away from the view's hull: a dot drawn in between lies inside the hull, and the
    near arc (the echo's nearest pixel to the apex) is found from the image's pieces, not from it."""
    frame = PhantomRenderer(192, 192, seed=4, geometry=probe("curvilinear")).render(0.0).lq
    view = fit_fan(frame)
    dot = (round(view.apex_x), round(view.apex_y + view.r0 - 6))  # 6 px above the face's middle, between its ends
    marked = frame.copy()
    cv2.circle(marked, dot, 2, 1.0, -1)
    assert echo_hull((frame > ECHO_LEVEL).astype(np.uint8))[dot[1], dot[0]]
    assert fit_fan(marked).close_to(view)


def test_a_view_split_by_fluid_is_fitted_whole_and_a_piece_cut_by_the_frame_is_kept():
    """Pieces of one view — a near field cut off by fluid across the view, echo in a corner of a view cropped by
    the frame — are the image, not marks: the fit is the one of the whole view."""
    frame = PhantomRenderer(192, 192, seed=4).render(0.0).lq
    split = frame.copy()
    split[40:56] = 0.0  # anechoic fluid right across the sector: its near field is a piece of its own
    pieces = cv2.connectedComponentsWithStats((split > ECHO_LEVEL).astype(np.uint8), connectivity=8)[2][1:, 4]
    assert np.sort(pieces)[-2] > 300  # 3 % of the rest: a piece, not a speck
    assert fit_fan(split).close_to(fit_fan(frame))
    ys, xs = np.mgrid[0:128, 0:160]
    band = np.where(xs < 150, 0.5, 0.0).astype(np.float32)  # a linear view cropped at the frame's left and top
    cropped = band.copy()
    cropped[:8, :] = 0.0
    cropped[:4, :12] = 0.5  # its echo in the top-left corner, 4 px of dark near field from the rest
    assert fit_fan(cropped).close_to(Band(-0.5, 149.5, -0.5, 127.5), px=0.01)


@pytest.mark.parametrize("kind", PROBES)
def test_every_probe_kind_is_rendered_fitted_and_given_the_grain(kind):
    """Each probe's phantom frame: the stage fits its view (a band for the linear array, a fan with a flat top for
    the trapezoid), covers its echo region and adds grain everywhere in it; none is skipped."""
    renderer = PhantomRenderer(128, 128, seed=4, geometry=probe(kind))
    sample = renderer.render(0.0)
    view = fit_fan(sample.lq)
    assert isinstance(view, Band) == (kind == "linear")
    if kind == "trapezoid":
        assert view.top is not None and view.bottom is not None
    stage = BeamSpeckle(BeamSpeckleConfig())
    rng = np.random.default_rng(0)
    planes = [rng.standard_normal(stage.plane_shape[2:]).astype(np.float32) for _ in range(2)]
    base = cv2.GaussianBlur(sample.hq, (0, 0), 3)
    out = stage.apply(base, sample.lq, planes)
    assert stage.skipped == 0
    sector, shown = renderer.in_sector, stage._inside > 0  # the true view, the one the stage keeps (dark fluid too)
    assert (shown & sector).sum() / sector.sum() > 0.98
    away = cv2.distanceTransform((~sector).astype(np.uint8), cv2.DIST_L2, 3)  # px from the true view
    assert away[shown].max() <= 2.0 and away[out > 0].max() <= 2.0  # nothing beyond the view's edge pixels
    inner = cv2.erode(sector.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    grain = out - stage.apply(base, sample.lq, None)  # the same frame with noise off: the grain alone
    assert np.abs(grain[inner]).mean() > 0.05  # grain everywhere inside, not only in part of the view


def test_the_log_envelope_is_centred_log_rayleigh():
    """Unit-energy PSF: ln R of fully developed speckle has mean −γ/2 (removed) and standard deviation π/√24."""
    stage = BeamSpeckle(BeamSpeckleConfig(rays=400, samples=400, lateral_sigma=1.3, axial_sigma=0.8))
    rng = np.random.default_rng(0)
    grain = stage.log_envelope(rng.standard_normal((400, 400)), rng.standard_normal((400, 400)))
    assert abs(grain.mean()) < 0.02
    assert abs(grain.std() - math.pi / math.sqrt(24)) < 0.02


def _sector_frame(size: int = 160) -> tuple[np.ndarray, np.ndarray]:
    renderer = PhantomRenderer(size, size, seed=1)
    s = renderer.render(0.0)
    return s.lq, renderer.in_sector


def test_a_wider_psf_makes_a_larger_grain_along_its_own_axis():
    frame, sector = _sector_frame()
    flat = np.where(frame > 0, 0.5, 0.0).astype(np.float32)
    inner = np.zeros_like(sector)
    inner[20:140, 40:120] = cv2.erode(sector.astype(np.uint8), np.ones((7, 7), np.uint8))[20:140, 40:120] > 0

    def fwhm(lateral, axial):
        stage = BeamSpeckle(BeamSpeckleConfig(lateral_sigma=lateral, axial_sigma=axial))
        rng = np.random.default_rng(1)
        planes = [rng.standard_normal(stage.plane_shape[2:]).astype(np.float32) for _ in range(2)]
        return speckle_fwhm(stage.apply(flat, frame, planes) * 255, inner)

    narrow, wide_lateral, wide_axial = fwhm(0.6, 1.0), fwhm(2.4, 1.0), fwhm(0.6, 6.0)  # 640 samples: ~4 per px
    assert wide_lateral[1] > 1.3 * narrow[1] and wide_lateral[0] < 1.15 * narrow[0]
    assert wide_axial[0] > 1.3 * narrow[0] and wide_axial[1] < 1.15 * narrow[1]


def test_a_level_fit_without_paired_panels_is_refused_before_anything_is_written(tmp_path, capsys):
    from usnst.cli import main

    frames = tmp_path / "style"
    frames.mkdir()
    cv2.imwrite(str(frames / "a.png"), to_uint8(_sector_frame()[0]))
    out = tmp_path / "m.pt"
    for flag in ("--fit-level", "--fit-curve"):
        assert main(["speckle", "--style", str(frames), flag, "--out", str(out)]) == 2
        assert f"{flag} needs --triptychs" in capsys.readouterr().err
        assert main(["speckle", "--triptychs", str(frames), flag, "--no-fit", "--out", str(out)]) == 2
        assert f"{flag} is a fit" in capsys.readouterr().err
    assert main(["speckle", "--triptychs", str(frames), "--curve-from", str(frames), "--out", str(out)]) == 2
    assert "give --fit-curve too" in capsys.readouterr().err
    assert not out.exists()


def test_usnst_speckle_stores_the_spacing_and_the_display_mode_with_the_model(tmp_path):
    from usnst.cli import main
    from usnst.engines.checkpoint import load_checkpoint

    frames = tmp_path / "style"
    frames.mkdir()
    cv2.imwrite(str(frames / "a.png"), to_uint8(_sector_frame()[0]))
    save_checkpoint(tmp_path / "net.pt", tiny_net(), {"task": "lq2hq"})
    out = tmp_path / "m.pt"
    assert main(["speckle", "--model", str(tmp_path / "net.pt"), "--style", str(frames), "--no-fit", "--mean-shown",
                 "--sample-mm", "0.2", "--out", str(out)]) == 0
    stage = BeamSpeckleConfig.from_dict(load_checkpoint(out)[1][META_KEY])
    assert stage.mean_shown and stage.sample_mm == 0.2


@pytest.fixture
def speckled_checkpoint(tmp_path):
    return save_checkpoint(tmp_path / "speckled.pt", tiny_net(), {"task": "lq2hq", META_KEY: BeamSpeckleConfig(
        rays=96, samples=160).to_dict()})


def test_every_engine_runs_the_stage_the_checkpoint_records(speckled_checkpoint, tmp_path):
    frame, sector = _sector_frame(96)
    plain = save_checkpoint(tmp_path / "plain.pt", tiny_net(), {"task": "lq2hq"})
    engine = load_engine(speckled_checkpoint, "torch", EngineOptions(seed=0, threads=1))
    assert engine.describe()["beam_speckle"]["rays"] == 96
    out = engine.infer(frame)
    assert out.shape == frame.shape and out.dtype == np.float32
    near_echo = cv2.dilate((frame > 1 / 255).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert np.all(out[~near_echo] == 0)  # black where the probe sees nothing (as engines.geometry.echo_region)
    assert "beam_speckle" not in load_engine(plain, "torch", EngineOptions(seed=0, threads=1)).describe()
    # ONNX Runtime, from the checkpoint and from the artifact alone, runs the same stage
    onnx = load_engine(speckled_checkpoint, "onnxruntime", EngineOptions(seed=0, threads=1))
    assert np.abs(onnx.infer(frame) - out).max() < 1e-4
    artifact = build_artifact(speckled_checkpoint, "onnxruntime", tmp_path / "speckled.onnx")
    alone = load_engine(artifact, None, EngineOptions(seed=0, threads=1))
    assert alone.describe()["beam_speckle"]["samples"] == 160
    assert np.abs(alone.infer(frame) - out).max() < 1e-4


def test_noise_modes_hold_for_the_grain(speckled_checkpoint):
    frame, _ = _sector_frame(96)
    fixed = load_engine(speckled_checkpoint, "torch", EngineOptions(seed=0, threads=1, noise="fixed"))
    assert np.array_equal(fixed.infer(frame), fixed.infer(frame))  # a paused probe gives a still output
    boiling = load_engine(speckled_checkpoint, "torch", EngineOptions(seed=0, threads=1, noise="frame"))
    assert np.abs(boiling.infer(frame) - boiling.infer(frame)).mean() > 0.01
    off = load_engine(speckled_checkpoint, "torch", EngineOptions(seed=0, threads=1, noise="off"))
    base = off.infer(frame)  # no grain: the net's output, low-passed
    assert np.array_equal(base, off.infer(frame))
    texture = lambda image: np.abs(np.diff(image, axis=1))[:, 30:66].mean()
    assert texture(fixed.infer(frame)) > 2 * texture(base)


def test_the_fit_makes_the_grain_measure_like_the_target():
    """Known answer: phantom HQ frames, rendered at 55 dB (0.158 grey per neper); the fitted stage's speckle size
    and strength match the measured target's."""
    frames, segs = [], []
    for seed in range(4):
        s = PhantomRenderer(192, 192, seed=seed).render(0.0)
        frames.append(to_uint8(s.hq))
        segs.append(s.seg)
    fit = fit_beam_speckle(frames, segs)
    target, fitted = fit["target"], fit["fitted"]
    for key in ("fwhm_axial_px", "fwhm_lateral_px", "grain_std"):
        assert abs(fitted[key] / target[key] - 1) < 0.08, (key, fitted, target)
    assert abs(fit["config"].contrast / (20 / math.log(10) / 55) - 1) < 0.1
    with pytest.raises(ValueError, match="sector-probe frame"):
        fit_beam_speckle([np.zeros((64, 64), np.uint8)])


def test_the_level_fit_brings_a_too_bright_base_to_the_targets_tissue_grey():
    """Known answer: a "net" that returns each scene's HQ low-passed and 10 grey levels too bright (a squared-error
    base sits about that far above HQ); the fitted level takes the 10 back, and is left at 0 unless asked for."""
    hq, lq, segs, made = [], [], [], {}
    for seed in range(4):
        s = PhantomRenderer(192, 192, seed=seed).render(0.0)
        hq.append(to_uint8(s.hq))
        lq.append(to_uint8(s.lq))
        segs.append(s.seg)
        made[lq[-1].tobytes()] = cv2.GaussianBlur(hq[-1].astype(np.float32), (0, 0), 2.0) / 255.0 + 10 / 255.0
    run = lambda frame: made[np.round(frame * 255).astype(np.uint8).tobytes()]
    plain = fit_beam_speckle(hq, segs, inputs=lq, run=run)
    assert plain["config"].level == 0.0
    fit = fit_beam_speckle(hq, segs, inputs=lq, run=run, fit_level=True)
    assert abs(fit["config"].level * 255 + 10) < 2.0, fit["config"]
    stage, rng = BeamSpeckle(fit["config"]), np.random.default_rng(1)
    out = stage.apply(made[lq[0].tobytes()], lq[0].astype(np.float32) / 255,
                      [rng.standard_normal(stage.plane_shape[2:]).astype(np.float32) for _ in range(2)]) * 255
    mask = tissue_mask(hq[0], segs[0])
    assert abs(out[mask].mean() - hq[0][mask].mean()) < 2.5


def test_the_grey_curve_fit_gives_back_what_a_base_too_bright_in_the_dark_took():
    """Known answer: targets whose mean grey is t, a "net" whose base shows 40 + 0.8·t (a squared-error net's dark end
    lifted: its fluid); the fitted curve takes the base back to t over the whole range, so the output under the grain
    shows the targets' mean in the dark and the bright alike, where one level cannot bring both back."""
    rng = np.random.default_rng(0)
    frames, targets, made = [], [], {}
    for seed in range(4):
        frame = to_uint8(PhantomRenderer(160, 160, seed=seed).render(0.0).lq)
        inside = echo_region(frame.astype(np.float32) / 255) > 0
        t = cv2.GaussianBlur(rng.random(frame.shape).astype(np.float32), (0, 0), 10)
        t = 20 + 200 * (t - t[inside].min()) / np.ptp(t[inside])  # a smooth mean grey, 20…220 over the view
        targets.append(np.where(inside, np.clip(t + rng.normal(0, 8, t.shape), 0, 255), 0).astype(np.uint8))
        made[frame.tobytes()] = np.where(inside, 40 + 0.8 * t, 0).astype(np.float32) / 255
        frames.append(frame)
    run = lambda frame: made[np.round(frame * 255).astype(np.uint8).tobytes()]
    with pytest.raises(ValueError, match="not both"):
        fit_beam_speckle(targets, inputs=frames, run=run, fit_level=True, fit_curve=True)
    fitted = {name: fit_beam_speckle(targets, inputs=frames, run=run, **{name: True})["config"]
              for name in ("fit_level", "fit_curve")}
    curve = np.asarray(fitted["fit_curve"].grey_curve) * 255
    assert fitted["fit_curve"].mean_shown and fitted["fit_curve"].level == 0.0 and np.all(np.diff(curve) >= 0)
    shown_base = np.arange(60, 190)  # the bases of targets 25…187, away from the ends the fit saw least
    assert np.abs(curve[shown_base] - (shown_base - 40) / 0.8).max() < 3.0
    errors = {}
    for name, config in fitted.items():
        stage, noise = BeamSpeckle(config), np.random.default_rng(1)
        frame = frames[3].astype(np.float32) / 255
        out = stage.apply(made[frames[3].tobytes()], frame,
                          [noise.standard_normal(stage.plane_shape[2:]).astype(np.float32) for _ in range(2)]) * 255
        inner = cv2.erode(stage._inside.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        base = made[frames[3].tobytes()] * 255
        errors[name] = [abs(out[m].mean() - targets[3][m].mean()) for m in (inner & (base < 80), inner & (base > 150))]
    assert max(errors["fit_curve"]) < 3.0, errors
    assert max(errors["fit_level"]) > 8.0, errors
    # on other frames (another formation's): the curve follows theirs, the speckle fit stays on the targets
    darker = [(f, (t * 0.5).astype(np.uint8)) for f, t in zip(frames, targets)]
    other = fit_beam_speckle(targets, inputs=frames, run=run, fit_curve=True, curve_pairs=darker)["config"]
    assert other.contrast == fitted["fit_curve"].contrast
    assert np.abs(np.asarray(other.grey_curve)[shown_base] * 255 - curve[shown_base] * 0.5).max() < 2.0


def test_a_grey_curve_is_checked_and_stays_what_it_was_through_the_checkpoint():
    rising = tuple(np.linspace(0.05, 0.9, 256))
    config = BeamSpeckleConfig(mean_shown=True, grey_curve=rising)
    assert BeamSpeckleConfig.from_dict(config.to_dict()) == config
    stage = BeamSpeckle(config)
    assert abs(float(stage.mean_of(np.float32(0.5))) - float(np.interp(0.5, np.linspace(0, 1, 256), rising))) < 1e-3
    for bad, match in ((rising[:10], "256 greys"), (rising[::-1], "must not fall"), (tuple(np.full(256, 1.5)), "256 greys")):
        with pytest.raises(ValueError, match=match):
            BeamSpeckleConfig(mean_shown=True, grey_curve=bad)
    with pytest.raises(ValueError, match="needs mean_shown"):
        BeamSpeckleConfig(grey_curve=rising)
    with pytest.raises(ValueError, match="one or the other"):
        BeamSpeckleConfig(mean_shown=True, grey_curve=rising, level=0.02)


def test_the_fan_follows_a_change_of_probe_and_stays_put_otherwise():
    """A frame is only checked against the fan it had (fitting costs ~10 ms at 512²); a deeper or wider sector
    is fitted anew, and frames of the same probe keep the same scan maps (no speckle jitter from fitting noise)."""
    stage = BeamSpeckle(BeamSpeckleConfig(rays=64, samples=96))
    rng = np.random.default_rng(0)
    planes = [rng.standard_normal((96, 64)).astype(np.float32) for _ in range(2)]
    shallow = PhantomRenderer(128, 128, seed=2)
    wide = PhantomRenderer(128, 128, seed=2, **acquisition("outside", np.random.default_rng([11, 4242])))
    first = stage.apply(shallow.render(0.0).hq, shallow.render(0.0).lq, planes)
    maps = stage._maps
    stage.apply(shallow.render(3.0).hq, shallow.render(3.0).lq, planes)  # the probe moved: new content, same fan
    assert stage._maps is maps
    stage.apply(wide.render(0.0).hq, wide.render(0.0).lq, planes)
    assert stage._maps is not maps and abs(stage.fan.theta1 - true_fan(wide)[4]) < math.radians(0.5)
    again = stage.apply(shallow.render(0.0).hq, shallow.render(0.0).lq, planes)
    assert np.abs(again - first).max() < 1e-6  # back to the first probe: the same output


def test_independent_hq_panels_share_anatomy_not_speckle(tmp_path):
    from usnst.offline.datasets import read_triptych_folder
    from usnst.offline.realism import lowpass_ssim, tissue_mask
    from usnst_stream.phantom import write_phantoms

    write_phantoms(tmp_path / "same", 2, 128, 128, seed=5)
    write_phantoms(tmp_path / "own", 2, 128, 128, seed=5, independent_hq=True)
    same, own = read_triptych_folder(tmp_path / "same"), read_triptych_folder(tmp_path / "own")
    for a, b in zip(same, own):
        assert np.array_equal(a.lq, b.lq) and np.array_equal(a.seg, b.seg)
        fine = lambda t: t.astype(np.float32) - cv2.GaussianBlur(t.astype(np.float32), (0, 0), 2.0)
        inside = tissue_mask(a.hq, a.seg)  # away from label and sector edges, which both panels share
        assert abs(np.corrcoef(fine(a.hq)[inside], fine(b.hq)[inside])[0, 1]) < 0.2  # new scatterers
        assert lowpass_ssim(to_uint8(a.hq), to_uint8(b.hq)) > 0.85  # the same scene


def test_one_composition_for_every_noise_mode_and_every_frame():
    """Issue 26 (5): noise off kept no detail share and no fan mask, a frame without a fan the raw net output;
    now each is the same sum, the grain the only difference."""
    config = BeamSpeckleConfig(rays=32, samples=48, detail=0.5, level=0.02, contrast=0.05)
    frame, _ = _sector_frame(96)
    styled = np.clip(frame * 0.8 + 0.1 * np.random.default_rng(0).random(frame.shape), 0, 1).astype(np.float32)
    planes = [np.random.default_rng(k).standard_normal((48, 32)).astype(np.float32) for k in (1, 2)]
    on, off = BeamSpeckle(config), BeamSpeckle(config)
    with_grain, without = on.apply(styled, frame, planes), off.apply(styled, frame, None)
    grain = on.grain(on._maps_for(frame), planes)
    inside = (on._inside > 0) & (with_grain > 0) & (with_grain < 1) & (without > 0) & (without < 1)
    assert inside.mean() > 0.3 and np.allclose((with_grain - without)[inside], grain[inside], atol=1e-6)
    assert (without[on._inside == 0] == 0).all()  # noise off: black outside the fan too
    ys, xs = np.mgrid[0:64, 0:64]
    disc = (np.hypot(xs - 32, ys - 32) < 24).astype(np.float32) * 0.4  # no probe's view: nothing fits it
    flat = np.random.default_rng(3).random((64, 64)).astype(np.float32)
    no_fan = BeamSpeckle(config)
    out = no_fan.apply(flat, disc, [np.ones((48, 32), np.float32)] * 2)
    assert no_fan.skipped == 1 and np.array_equal(out, BeamSpeckle(config).apply(flat, disc, None))
    assert (out[:4] == 0).all() and (out[:, :4] == 0).all()  # black outside the echo region


def test_a_blank_frame_is_passed_quietly_and_a_fan_it_cannot_fit_is_warned_once(caplog):
    """Issue 25, item 11: every node start warned 'no imaging sector' because its warm-up frame is black."""
    import logging

    stage = BeamSpeckle(BeamSpeckleConfig(rays=32, samples=48))
    planes = [np.zeros((1, 1, 48, 32), np.float32)] * 2
    blank = np.zeros((64, 64), np.float32)
    with caplog.at_level(logging.WARNING):
        stage.apply(blank, blank, planes)
        assert "imaging sector" not in caplog.text and stage.skipped == 1
        ys, xs = np.mgrid[0:96, 0:96]
        disc = (np.hypot(xs - 48, ys - 48) < 40).astype(np.float32) * 0.5
        for _ in range(3):
            stage.apply(disc, disc, planes)
    assert caplog.text.count("beam speckle:") == 1 and stage.skipped == 4


def test_a_checkpoint_is_read_and_hashed_once_per_load(tmp_path, monkeypatch):
    """Issue 26 (5): the backend, the stages and the provenance each read (and hashed) the checkpoint."""
    import torch

    from usnst.engines import checkpoint

    path = save_checkpoint(tmp_path / "m.pt", tiny_net(), {"task": "lq2hq", META_KEY: BeamSpeckleConfig(
        rays=64, samples=96).to_dict()})
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a[0]) or real_load(*a, **k))
    checkpoint._read_checkpoint.cache_clear()
    checkpoint._sha256.cache_clear()
    for backend in ("torch", "onnxruntime"):
        engine = load_engine(path, backend, EngineOptions(threads=1))
        assert engine.describe()["beam_speckle"]["rays"] == 64
    assert len(loads) == 1 and checkpoint._sha256.cache_info().misses == 1
    save_checkpoint(path, tiny_net(seed=3), {"task": "lq2hq"})  # a new version of the file is read again
    assert "beam_speckle" not in load_engine(path, "torch", EngineOptions(threads=1)).describe()
    assert len(loads) == 2


def test_with_the_frames_pose_the_axial_grain_keeps_its_width_in_mm_on_a_shallow_probe():
    """A scanner's pulse has a length in mm: a 50 mm linear view samples 2.4 times finer than the 120 mm sector the
    widths were fitted on. Told the pixel spacing (the pose), the stage's axial grain matches that probe's HQ; not
    told, it keeps the width in samples (today's behaviour)."""
    from usnst.engines.acoustics import HQ_SAMPLE_MM

    renderer = PhantomRenderer(192, 192, seed=6, geometry=probe("linear"))
    sample = renderer.render(0.0)
    hq = to_uint8(sample.hq)
    mask = tissue_mask(hq, sample.seg)
    stage = BeamSpeckle(BeamSpeckleConfig(sample_mm=HQ_SAMPLE_MM))
    rng = np.random.default_rng(1)
    planes = [rng.standard_normal(stage.plane_shape[2:]).astype(np.float32) for _ in range(2)]
    base = cv2.GaussianBlur(sample.hq, (0, 0), 3)
    posed = stage.apply(base, sample.lq, planes, renderer.image_to_world(0.0))
    told = speckle_fwhm(to_uint8(posed), mask)[0]
    untold = speckle_fwhm(to_uint8(BeamSpeckle(BeamSpeckleConfig(sample_mm=HQ_SAMPLE_MM)).apply(
        base, sample.lq, planes)), mask)[0]
    target = speckle_fwhm(hq, mask)[0]
    assert abs(told / target - 1) < 0.15 and untold < 0.7 * target
    # a sender that knows its depth but not its pose (meta.spacing_mm, a DICOM's ultrasound region) gets the same grain
    spaced = BeamSpeckle(BeamSpeckleConfig(sample_mm=HQ_SAMPLE_MM)).apply(
        base, sample.lq, planes, spacing_mm=(renderer.pixel_mm, renderer.pixel_mm))
    np.testing.assert_allclose(spaced, posed, atol=1e-6)
    unknown = BeamSpeckle(BeamSpeckleConfig()).apply(base, sample.lq, planes, spacing_mm=(0.1, 0.1))
    assert np.array_equal(unknown, BeamSpeckle(BeamSpeckleConfig()).apply(base, sample.lq, planes))  # no sample_mm


@pytest.mark.parametrize("grey", [0.01, 0.5, 0.97])
def test_with_mean_shown_the_display_shows_the_nets_mean_grey_under_the_grain(grey):
    """Grain added on top of a near-black (near-white) grey and clipped by the display brightens (darkens) it; added
    under the clipping it keeps the net's mean, so fluid stays dark with sparse bright speckle, as a scanner's."""
    frame, sector = _sector_frame()
    inner = cv2.erode(sector.astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
    flat = np.where(frame > 0, grey, 0.0).astype(np.float32)
    config = BeamSpeckleConfig(base_sigma=0.0)
    rng = np.random.default_rng(2)
    planes = [rng.standard_normal(BeamSpeckle(config).plane_shape[2:]).astype(np.float32) for _ in range(2)]
    shown = BeamSpeckle(replace(config, mean_shown=True)).apply(flat, frame, planes)[inner].mean()
    on_top = BeamSpeckle(config).apply(flat, frame, planes)[inner].mean()
    assert abs(shown - grey) < 0.004
    if grey != 0.5:
        assert abs(on_top - grey) > 0.015  # what it replaces: 4+ grey levels off at either end


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_the_net_sees_a_frame_at_the_scale_it_was_trained_at_and_the_grain_fills_the_whole_frame(tmp_path, backend):
    small, _ = _sector_frame(96)
    depth = fit_fan(small).depth_px
    path = save_checkpoint(tmp_path / "m.pt", tiny_net(), {"task": "lq2hq", META_KEY: BeamSpeckleConfig(
        rays=96, samples=160, net_depth_px=depth).to_dict()})
    engine = load_engine(path, backend, EngineOptions(seed=0, threads=1))
    # a model that declares no scale takes every frame as sent, as before
    plain = load_engine(save_checkpoint(tmp_path / "p.pt", tiny_net(), {"task": "lq2hq", META_KEY: BeamSpeckleConfig(
        rays=96, samples=160).to_dict()}), backend, EngineOptions(seed=0, threads=1))
    seen = []
    net = engine.inner.infer
    engine.inner.infer = lambda frame: seen.append(frame.shape) or net(frame)
    for size in (96, 108, 192, 48):
        frame, sector = _sector_frame(size)
        engine.reset()
        plain.reset()
        out, as_sent = engine.infer(frame), plain.infer(frame)
        assert out.shape == frame.shape
        assert np.all(out[~cv2.dilate(sector.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)] == 0)
        # grain everywhere in the view at the frame's own size: lit as often as the net run on the frame as sent
        assert abs((out[sector] > 0).mean() - (as_sent[sector] > 0).mean()) < 0.03
    # within 1.2× as sent, else resampled to the net's scale (a 48² view's beams are measured to about a pixel)
    assert seen[:3] == [(96, 96), (108, 108), (96, 96)] and seen[3][0] == seen[3][1] and abs(seen[3][0] - 96) <= 1
    assert plain.stage.net_scale(_sector_frame(192)[0]) == (None, None)


def test_a_shrunk_frame_keeps_the_fine_input_texture_the_net_could_not_see_at_the_detail_share(tmp_path):
    """Shrinking a large frame for the net removes the input speckle its detail passes on at its own scale; the stage
    takes that texture from the input instead (``Resampled.shrunk_away``), with no rim at the view's edge."""
    frame, sector = _sector_frame(192)
    flat = np.where(sector, 0.5, 0.0).astype(np.float32)
    small = cv2.resize(flat, (96, 96), interpolation=cv2.INTER_AREA)
    naive = flat - cv2.resize(small, (192, 192), interpolation=cv2.INTER_LINEAR)
    assert np.abs(naive[sector]).max() > 0.1  # what a plain difference leaves along the edge
    view = sector.astype(np.float32)
    assert np.abs(Resampled(flat, view, 2.0).shrunk_away()).max() < 0.01  # even: no fine texture, edge too
    fine = np.random.default_rng(0).normal(0, 0.05, flat.shape).astype(np.float32) * sector
    away = Resampled(flat + fine, view, 2.0).shrunk_away()
    assert np.corrcoef(away[sector], fine[sector])[0, 1] > 0.8
    assert np.all(away[~sector] == 0)

    depth = fit_fan(_sector_frame(96)[0]).depth_px
    textured = frame + 0.5 * fine
    for detail in (0.0, 0.6):
        path = save_checkpoint(tmp_path / f"d{detail}.pt", tiny_net(), {"task": "lq2hq", META_KEY: BeamSpeckleConfig(
            rays=96, samples=160, net_depth_px=depth, detail=detail).to_dict()})
        engine = load_engine(path, "onnxruntime", EngineOptions(noise="off", threads=1))
        change = engine.infer(textured) - engine.infer(frame)
        # at the pixel scale, finer than anything the net's output brought back up from 96² can hold
        finest = lambda image: image - cv2.GaussianBlur(image, (0, 0), 1.0)
        inner = cv2.erode(sector.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) & (frame > 0.1)
        followed = np.corrcoef(finest(change)[inner], finest(fine)[inner])[0, 1]
        assert followed > 0.6 if detail else abs(followed) < 0.2


@pytest.mark.parametrize("size", [96, 192])
def test_the_views_last_pixels_are_as_bright_as_its_interior_at_the_nets_scale_and_resampled(tmp_path, size):
    """The base is low-passed within the view and a shrunk frame goes to the net and comes back within it: the
    echo region grown by 2 px (and plain area shrinking and linear enlarging) averaged the black outside the view
    into its last pixels, a dark rim along the sector's edge (16 % darker at 256², 4–6 px wide at 1000×1386)."""
    sector = _sector_frame(size)[1]
    flat = np.where(sector, 0.5, 0.0).astype(np.float32)
    depth = fit_fan(_sector_frame(96)[0]).depth_px
    engine = load_engine(save_checkpoint(tmp_path / "m.pt", tiny_net(), {"task": "lq2hq", META_KEY: BeamSpeckleConfig(
        rays=96, samples=160, net_depth_px=depth, detail=0.7).to_dict()}), "torch", EngineOptions(noise="off"))
    engine.inner.infer = lambda image: image  # a net that keeps its input: what reaches the view's edge is the stage's
    out = engine.infer(flat)
    inside = fit_fan(flat).polar(flat.shape, 2, 2)[2] <= 0  # the view the stage fits
    last = sector & ~cv2.erode(sector.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    interior = cv2.erode(inside.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
    assert abs(out[interior].mean() - 0.5) < 0.01
    assert out[last].mean() > 0.48
    ring = inside & ~sector  # pixels the fitted view takes in beyond the echo: black, as the input (but a notch)
    assert ring.sum() > 0 and (out[ring] > 0).mean() < 0.1


def test_the_triptych_fit_records_the_beam_length_the_net_takes(tmp_path):
    from usnst.cli import main
    from usnst.engines.checkpoint import load_checkpoint
    from usnst_stream.phantom import write_phantoms

    write_phantoms(tmp_path / "data", 2, 96, 96, seed=3)
    save_checkpoint(tmp_path / "net.pt", tiny_net(), {"task": "lq2hq"})
    out = tmp_path / "m.pt"
    assert main(["speckle", "--model", str(tmp_path / "net.pt"), "--triptychs", str(tmp_path / "data"), "--frames", "2",
                 "--out", str(out)]) == 0
    stage = BeamSpeckleConfig.from_dict(load_checkpoint(out)[1][META_KEY])
    frame = PhantomRenderer(96, 96, seed=3).render(0.0).lq
    assert stage.net_depth_px == pytest.approx(fit_fan(frame).depth_px, rel=0.05)
    assert main(["speckle", "--model", str(tmp_path / "net.pt"), "--triptychs", str(tmp_path / "data"), "--frames", "2",
                 "--net-depth-px", "0", "--no-fit", "--out", str(tmp_path / "n.pt")]) == 0
    assert BeamSpeckleConfig.from_dict(load_checkpoint(tmp_path / "n.pt")[1][META_KEY]).net_depth_px == 0


def test_a_size_refusal_of_a_compiled_net_says_which_size_the_net_was_given_and_why(tmp_path):
    depth = fit_fan(_sector_frame(96)[0]).depth_px
    engine = load_engine(save_checkpoint(tmp_path / "m.pt", tiny_net(), {"task": "lq2hq", META_KEY: BeamSpeckleConfig(
        rays=96, samples=160, net_depth_px=depth).to_dict()}), "torch", EngineOptions(seed=0, threads=1))

    def refuse(frame):
        raise ValueError(f"frame {frame.shape[0]}x{frame.shape[1]} is outside this engine's sizes")

    engine.inner.infer = refuse
    with pytest.raises(ValueError, match=r"192x192 frame goes to the net as 96x96: resampled to the scale"):
        engine.infer(_sector_frame(192)[0])


def test_a_view_that_fills_the_frame_is_checked_not_fitted_again_every_frame(monkeypatch):
    """A real linear array's cleaned frame is lit to its edges: no ring outside the view to check, which read as a
    failed check (a mean of nothing) and refitted the view every frame (~10 ms at 512²)."""
    import usnst.engines.beam_speckle as stage_module

    fits = []
    monkeypatch.setattr(stage_module, "fit_fan", lambda frame: fits.append(1) or fit_fan(frame))
    rng = np.random.default_rng(3)
    frames = [np.clip(0.4 + 0.15 * rng.standard_normal((96, 128)), 0, 1).astype(np.float32) for _ in range(3)]
    stage = BeamSpeckle(BeamSpeckleConfig(rays=64, samples=96))
    planes = [rng.standard_normal((96, 64)).astype(np.float32) for _ in range(2)]
    with np.errstate(all="raise"):
        outs = [stage.apply(f, f, planes) for f in frames]
    assert isinstance(stage.fan, Band) and stage.skipped == 0 and len(fits) == 1
    assert all(o.std() > 0.05 for o in outs)


def test_a_stream_keeps_its_view_when_contact_is_lost_along_part_of_the_face():
    """A linear array lifted off the skin on one side shows black there, and its echo a slanted edge no view fits
    (a real Clarius video: 4 of 210 frames streamed without grain, between frames with it). With echo only inside the
    view it had, the view stays; a blank frame stays black, and echo beyond the view is a new view."""
    rng = np.random.default_rng(5)
    band = np.clip(0.4 + 0.15 * rng.standard_normal((96, 128)), 0, 1).astype(np.float32)
    band[:, :16], band[:, -16:] = 0, 0  # a 96-px-wide band in a 128-px frame
    ys, xs = np.mgrid[0:96, 0:128]
    lifted = np.where(xs < 16 + 1.2 * (96 - ys), 0, band).astype(np.float32)  # black left of a slanted line
    with pytest.raises(NoFan, match="leans"):
        fit_fan(lifted)
    stage = BeamSpeckle(BeamSpeckleConfig(rays=64, samples=96))
    planes = [rng.standard_normal((96, 64)).astype(np.float32) for _ in range(2)]
    stage.apply(band, band, planes)
    view = stage.fan
    out = stage.apply(lifted, lifted, planes)
    assert stage.skipped == 0 and stage.fan is view
    grain = out - stage.apply(lifted, lifted, None)  # the same frame with the noise off
    assert grain[lifted > ECHO_LEVEL].std() > 0.05
    assert out[:, :16].max() == 0 and out[:, -16:].max() == 0  # still black beyond the view
    blank = np.zeros_like(band)
    assert stage.apply(blank, blank, planes).max() == 0 and stage.skipped == 1
    fresh = BeamSpeckle(BeamSpeckleConfig(rays=64, samples=96))
    fresh.apply(lifted, lifted, planes)  # no view yet: nothing to keep
    assert fresh.skipped == 1


def test_an_engine_says_its_grey_curve_in_five_greys_not_two_hundred_and_fifty_six():
    """describe() goes into every node's start-up log, stats record and Prometheus info: the curve's shape suffices."""
    described = load_engine("lq2hq_fast", "torch").describe()["beam_speckle"]["grey_curve"]
    assert described["base"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert len(described["shown"]) == 5 and described["shown"] == sorted(described["shown"])
