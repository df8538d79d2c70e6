"""A real scanner's texture as the beam-speckle stage's grain (issue 28, item 2): quilting that keeps the texture's
strength, a stage that survives checkpoint and ONNX metadata, blocks laid along the beams, noise modes and anchoring
as the formed grain's, and the fit that takes it from real frames."""
import cv2
import numpy as np
import pytest
from conftest import tiny_net

from usnst.engines.base import EngineOptions
from usnst.engines.beam_speckle import META_KEY, BeamSpeckle, BeamSpeckleConfig
from usnst.engines.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from usnst.engines.registry import build_artifact, load_engine
from usnst.engines.scanner_texture import META_KEY as TEXTURE_KEY
from usnst.engines.scanner_texture import ScannerTexture, ScannerTextureConfig, quilt
from usnst.offline.realism import speckle_fwhm
from usnst.offline.scanner_texture import (
    fit_scanner_texture,
    grey_map,
    strength_curve,
    texture_blocks,
)
from usnst.offline.temporal import merge_texture_motion, texture_motion
from usnst_io.media import to_uint8
from usnst_stream.phantom import PROBES, PhantomRenderer, probe


def _streaks(n: int, size: int, seed: int, axial: float = 0.6, lateral: float = 3.0) -> np.ndarray:
    """Unit-variance texture blocks stretched across the beam (lateral σ ≫ axial σ), as a scanner's speckle is."""
    rng = np.random.default_rng(seed)
    out = [cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), lateral, sigmaY=axial)
           for _ in range(n)]
    return np.stack([b / b.std() for b in out])


def _config(blocks: np.ndarray, strength: float = 20.0, depth_px: float = 96.0) -> ScannerTextureConfig:
    return ScannerTextureConfig.from_blocks(blocks, np.full(256, strength / 255), np.arange(256) / 255, depth_px)


def test_quilting_keeps_the_textures_strength_at_the_seams_as_inside_the_blocks():
    blocks = np.random.default_rng(0).standard_normal((16, 24, 24)).astype(np.float32)
    plane = quilt(blocks, (400, 400), np.random.default_rng(1).random(10_000))
    column_std = plane.std(axis=0)
    step, overlap = 16, 8  # a block of 24 overlaps its neighbour by 8 px
    seams = np.concatenate([column_std[x:x + overlap] for x in range(step - overlap + step, 380, step)])
    assert abs(plane.std() - 1) < 0.05 and abs(seams.mean() / column_std.mean() - 1) < 0.05
    with pytest.raises(ValueError, match="choices for"):
        quilt(blocks, (400, 400), np.zeros(3))


def test_the_stage_round_trips_through_metadata_and_refuses_a_damaged_one(tmp_path):
    blocks = _streaks(5, 16, 0)
    config = _config(blocks)
    again = ScannerTextureConfig.from_dict(config.to_dict())
    assert again == config and np.abs(again.decode() - blocks).max() <= 0.5 / 25 + 1e-6  # 8-bit at 1/25 σ
    with pytest.raises(ValueError, match="characters of blocks"):
        ScannerTextureConfig.from_dict({**config.to_dict(), "count": 6})
    with pytest.raises(ValueError, match="256 entries"):
        ScannerTextureConfig.from_dict({**config.to_dict(), "amplitude": [0.1] * 10})
    damaged = save_checkpoint(tmp_path / "d.pt", tiny_net(), {"task": "lq2hq", META_KEY: BeamSpeckleConfig().to_dict(),
                                                                 TEXTURE_KEY: {**config.to_dict(), "block": 4}})
    with pytest.raises(CheckpointError, match="scanner texture is invalid"):
        load_engine(damaged, "torch")
    alone = save_checkpoint(tmp_path / "a.pt", tiny_net(), {"task": "lq2hq", TEXTURE_KEY: config.to_dict()})
    with pytest.raises(CheckpointError, match="without the beam-speckle stage"):
        load_engine(alone, "torch")
    with pytest.raises(ValueError, match="mean_shown"):
        BeamSpeckle(BeamSpeckleConfig(mean_shown=True), texture=ScannerTexture(config))


def _sector(size: int = 160, seed: int = 1):
    renderer = PhantomRenderer(size, size, seed=seed)
    return renderer.render(0.0).lq, renderer


def test_the_blocks_run_along_the_beams_and_their_size_follows_the_view():
    """Blocks wide across and short along: on a sector frame the grain is wide across the beam at any frame size,
    and a frame of twice the pixels for the same view gets a grain twice as large in pixels."""
    texture = ScannerTexture(_config(_streaks(12, 32, 0)))
    sizes = {}
    for size in (160, 320):
        frame, renderer = _sector(size)
        stage = BeamSpeckle(BeamSpeckleConfig(base_sigma=0), texture=texture)
        planes = [np.random.default_rng(2).standard_normal(stage.plane_shape[2:]).astype(np.float32)] * 2
        out = stage.apply(np.where(frame > 0, 0.5, 0).astype(np.float32), frame, planes)
        inner = np.zeros(frame.shape, bool)  # the middle of the sector: beams near vertical
        inner[size // 4: 3 * size // 4, 2 * size // 5: 3 * size // 5] = True
        inner &= cv2.erode(renderer.in_sector.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        sizes[size] = speckle_fwhm(out * 255, inner)
    axial, lateral = sizes[160]
    assert lateral > 2 * axial
    assert 1.6 < sizes[320][1] / lateral < 2.4


@pytest.mark.parametrize("kind", PROBES)
def test_every_probe_kind_gets_the_texture_over_its_whole_view(kind):
    renderer = PhantomRenderer(128, 128, seed=4, geometry=probe(kind))
    frame = renderer.render(0.0).lq
    stage = BeamSpeckle(BeamSpeckleConfig(), texture=ScannerTexture(_config(_streaks(8, 24, 0))))
    planes = [np.random.default_rng(0).standard_normal(stage.plane_shape[2:]).astype(np.float32)] * 2
    base = np.where(frame > 0, 0.5, 0.0).astype(np.float32)
    grain = stage.apply(base, frame, planes) - stage.apply(base, frame, None)
    inner = cv2.erode(renderer.in_sector.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    assert stage.skipped == 0
    assert np.abs(grain[inner]).mean() > 0.03 and (np.abs(grain[inner]) > 0.005).mean() > 0.9  # everywhere in it


def test_noise_modes_anchoring_and_the_grey_map_hold_for_the_texture(tmp_path):
    frame, _ = _sector(96)
    config = ScannerTextureConfig.from_blocks(_streaks(8, 16, 0), np.full(256, 20 / 255),
                                              np.sqrt(np.arange(256) / 255), 80.0)
    path = save_checkpoint(tmp_path / "t.pt", tiny_net(), {"task": "lq2hq", META_KEY: BeamSpeckleConfig(
        rays=96, samples=160).to_dict(), TEXTURE_KEY: config.to_dict()})
    engine = lambda noise, backend="torch": load_engine(path, backend, EngineOptions(seed=0, threads=1, noise=noise))
    fixed = engine("fixed")
    assert fixed.describe()["scanner_texture"]["blocks"] == 8
    assert np.array_equal(fixed.infer(frame), fixed.infer(frame))  # a paused probe gives a still output
    boiling = engine("frame")
    assert np.abs(boiling.infer(frame) - boiling.infer(frame)).mean() > 0.01
    off = engine("off").infer(frame)
    plain = save_checkpoint(tmp_path / "p.pt", tiny_net(), {"task": "lq2hq", META_KEY: BeamSpeckleConfig(
        rays=96, samples=160).to_dict()})
    base = load_engine(plain, "torch", EngineOptions(seed=0, threads=1, noise="off")).infer(frame)
    inside = (base > 0.02) & (base < 0.98)
    assert np.abs(off[inside] - np.sqrt(base[inside])).max() < 0.01  # no texture, the grey map only
    # ONNX Runtime, from the checkpoint and from its artifact alone, runs the same texture
    onnx = engine("fixed", "onnxruntime")
    assert np.abs(onnx.infer(frame) - fixed.infer(frame)).max() < 1e-4
    alone = load_engine(build_artifact(path, "onnxruntime", tmp_path / "t.onnx"), None,
                        EngineOptions(seed=0, threads=1, noise="fixed"))
    assert np.abs(alone.infer(frame) - fixed.infer(frame)).max() < 1e-4


def test_the_texture_moves_with_the_tissue_in_a_stream():
    """(Round grain here: along a long streak a correlation peak has no one place, whatever the motion.)"""
    texture = ScannerTexture(_config(_streaks(12, 24, 0, axial=0.7, lateral=1.0), depth_px=140.0))
    results = []
    for seed in range(50000, 50003):
        renderer = PhantomRenderer(160, 160, seed=seed)
        frames = [renderer.render(k / 25).lq for k in range(9)]
        mask = cv2.erode((renderer.segmentation(0.0) > 0).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        # the anchoring alone: squares kept (their renewal, which 8 frames of this sweep complete, is tested below)
        stage = BeamSpeckle(BeamSpeckleConfig(), anchored=True, texture=texture, renew=0)
        planes = [np.random.default_rng(0).standard_normal(stage.plane_shape[2:]).astype(np.float32)] * 2
        out = [stage.apply(f, f, planes) for f in frames]
        results.append(texture_motion(out[0], out[-1], renderer.displacement(0.0, 8 / 25), mask))
    r = merge_texture_motion(results)
    assert r["windows"] >= 6 and r["following"] >= 0.8 and r["after_motion"] > 0.3


def _skewed(n: int, size: int, seed: int) -> np.ndarray:
    """Unit-variance blocks with a real texture's bright tail (skewness ~1.5): what renewal must not wash out."""
    rng = np.random.default_rng(seed)
    out = [np.exp(0.8 * cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), 1.0) / 0.28)
           for _ in range(n)]
    return np.stack([(b - b.mean()) / b.std() for b in out])


def test_the_squares_renew_with_the_path_the_tissue_moved_and_keep_the_textures_tail():
    """Known answer: a frame whose tissue moved p px moves every square p / (renew · depth) / SQUARE_LIFE of its
    cycle on; a still frame changes nothing; after a long sweep the texture is other squares (correlation with the
    first frame's low) but keeps its skewness, which mixing fresh texture into it, as the formed grain is mixed,
    washes out; the same stream and seed give the same squares; a view fitted again keeps them; a cut to another
    scene draws every square afresh."""
    from scipy.stats import skew

    from usnst.engines.scanner_texture import SQUARE_LIFE

    texture = ScannerTexture(_config(_skewed(64, 24, 0), depth_px=60.0))
    renderer = PhantomRenderer(192, 192, seed=50003)
    stage = BeamSpeckle(BeamSpeckleConfig(), anchored=True, texture=texture, renew=0.05)
    planes = [np.random.default_rng(0).standard_normal(stage.plane_shape[2:]).astype(np.float32)] * 2
    frames = [renderer.render(k / 25).lq for k in range(40)]  # rendered once: the renderer draws LQ noise per call
    frame = frames[0]
    first = stage.apply(frame, frame, planes)
    start, phase = stage._texture.copy(), stage._squares.phase.copy()
    assert np.array_equal(stage.apply(frame, frame, planes), first) and stage._squares.turns == 0  # paused
    later = frames[2]  # the probe moved on: the tissue slides within the same view
    stage.apply(later, later, planes)
    centre = np.array([95.5, 95.5, 1.0])
    moved = np.hypot(*((stage.motion.to_reference - np.eye(3)) @ centre)[:2])
    assert moved > 0.5
    advance = (stage._squares.phase - phase) % 1.0  # a square past its cycle's end begins the next
    np.testing.assert_allclose(advance, moved / (0.05 * stage.fan.depth_px) / SQUARE_LIFE, rtol=1e-5)
    again = BeamSpeckle(BeamSpeckleConfig(), anchored=True, texture=texture, renew=0.05)  # same seed, same stream
    for k in [0, 0, 2] + list(range(3, 40)):
        lq = frames[k]
        again.apply(lq, lq, planes)
        if k >= 3:
            stage.apply(lq, lq, planes)
    assert stage.motion.lost == 0 and stage._squares.turns > 30
    later = stage._texture
    assert np.array_equal(later, again._texture)  # reproducible: the fresh squares come from the stage's seed
    assert abs(np.corrcoef(start.ravel(), later.ravel())[0, 1]) < 0.3  # most squares are other ones
    assert skew(later.ravel()) == pytest.approx(skew(start.ravel()), rel=0.25)
    assert later.std() == pytest.approx(start.std(), rel=0.1)
    kept = later.copy()
    stage._maps = None  # the view fitted again (a new Fan object, the same size): the squares go on, not back to the first
    stage.apply(lq, lq, planes)
    assert np.corrcoef(kept.ravel(), stage._texture.ravel())[0, 1] > 0.9
    other = PhantomRenderer(192, 192, seed=9).render(3.0).lq
    stage.apply(other, other, planes)
    assert stage.motion.lost == 1 and abs(np.corrcoef(kept.ravel(), stage._texture.ravel())[0, 1]) < 0.1


def _real_like(n: int, seed: int) -> list[np.ndarray]:
    """Frames with a streaky texture whose strength grows with a left-to-right brightness ramp: what the fit must find."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ramp = np.tile(np.linspace(40, 200, 128, dtype=np.float32), (96, 1))
        grain = cv2.GaussianBlur(rng.standard_normal((96, 128)).astype(np.float32), (0, 0), 2.5, sigmaY=0.7)
        out.append(np.clip(ramp + ramp * 0.3 * grain / grain.std(), 0, 255).astype(np.uint8))
    return out


def test_the_fit_takes_blocks_strength_and_grey_curve_from_the_real_frames():
    real = _real_like(4, 0)
    dim = [(f // 2).astype(np.uint8) for f in _real_like(2, 1)]  # a model's outputs: half as bright
    config = fit_scanner_texture(real, dim, block=24, per_frame=4)
    blocks = config.decode()
    assert config.count == 12 and np.allclose(blocks.std(axis=(1, 2)), 1, atol=0.25)  # homogeneous: the set's own
    rows, columns = (np.abs(np.diff(b, axis=a)).mean() for b in [blocks] for a in (1, 2))
    assert rows > 1.5 * columns  # the streaks survive: they change faster down the beam than across
    strength = strength_curve(real)
    assert strength[180] > 2 * strength[60]
    lut = grey_map(dim, real)
    assert np.all(np.diff(lut.astype(int)) >= 0) and 1.6 < lut[60] / 60 < 2.4 and lut[0] == 0
    with pytest.raises(ValueError, match="no 200-px square of tissue"):
        fit_scanner_texture(real, dim, block=200)


def test_squares_holding_structure_at_the_anatomys_scale_are_left_out(monkeypatch):
    """Frames with bright 10-px flecks (a scanner's specular lines, walls): their squares carry structure that laid
    elsewhere would be invented, so the quarter left out are theirs and the plain frames' squares all stay."""
    plain = _real_like(6, 3)
    flecked = []
    for k, frame in enumerate(_real_like(2, 4)):
        marks = np.zeros(frame.shape, np.float32)
        for y, x in np.random.default_rng(k).integers(10, 86, (12, 2)):
            cv2.circle(marks, (int(x), int(y)), 5, 90.0, -1)
        flecked.append(np.clip(frame + cv2.GaussianBlur(marks, (0, 0), 2), 0, 255).astype(np.uint8))
    strength = strength_curve(plain + flecked)
    structure = lambda blocks: np.array([cv2.GaussianBlur(b, (0, 0), 3.0).std() for b in blocks])
    with monkeypatch.context() as m:
        m.setattr("usnst.offline.scanner_texture.STRUCTURED_SHARE", 0.0)
        plain_most = structure(texture_blocks(plain, 24, 4, np.random.default_rng(0), strength)).max()  # all 24
    kept = texture_blocks(plain + flecked, 24, 4, np.random.default_rng(0), strength)
    assert len(kept) == 24 and (structure(kept) <= plain_most + 1e-6).sum() == 24  # 32 drawn: the 8 flecked gone


def test_usnst_scanner_texture_writes_a_model_every_backend_runs(tmp_path):
    from usnst.cli import main

    real = tmp_path / "real"
    for k, frame in enumerate(_real_like(3, 2)):
        (real / f"rec{k}").mkdir(parents=True)
        cv2.imwrite(str(real / f"rec{k}" / "0.png"), frame)
    tri = tmp_path / "tri"
    assert main(["phantom", "--out", str(tri), "-n", "2", "--size", "96", "-q"]) == 0
    save_checkpoint(tmp_path / "net.pt", tiny_net(), {"task": "lq2hq", META_KEY: BeamSpeckleConfig(
        rays=96, samples=160).to_dict()})
    out = tmp_path / "m.pt"
    assert main(["scanner-texture", "--model", str(tmp_path / "net.pt"), "--real", str(real), "--triptychs", str(tri),
                 "--block", "24", "--out", str(out)]) == 0
    engine = load_engine(out, "onnxruntime", EngineOptions(seed=0, threads=1))
    assert engine.describe()["scanner_texture"]["sources"] == "rec0, rec1, rec2"
    frame = to_uint8(_sector(96)[0])
    assert engine.infer(frame.astype(np.float32) / 255).std() > 0.05
    assert main(["scanner-texture", "--model", str(tmp_path / "net.pt"), "--real", str(real), "--triptychs", str(tri),
                 "--out", str(out)]) == 2  # exists: refused without --overwrite
    # the same net for HQ frames (the shipped hq2clinical): its task, and the panel its grey map is measured on
    hq = tmp_path / "hq.pt"
    assert main(["scanner-texture", "--model", str(tmp_path / "net.pt"), "--real", str(real), "--triptychs", str(tri),
                 "--block", "24", "--task", "hq2clinical", "--out", str(hq)]) == 0
    lq_meta, hq_meta = (read_checkpoint(p)["meta"] for p in (out, hq))
    assert lq_meta["task"] == "lq2hq" and hq_meta["task"] == "hq2clinical"
    assert lq_meta[TEXTURE_KEY]["grey_map"] != hq_meta[TEXTURE_KEY]["grey_map"]

