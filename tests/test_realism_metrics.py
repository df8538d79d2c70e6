"""KID (unbiased MMD) and the Nakagami speckle statistic, against their definitions and known distributions."""
import cv2
import numpy as np
import pytest

from usnst.offline.metrics import kid, nakagami


def _brute_mmd2(x, y):
    d = x.shape[1]
    k = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_is_the_unbiased_mmd_and_separates_distributions():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 5)), rng.normal(0.5, 1, size=(12, 5))
    value, spread = kid(x, y, subsets=1, subset_size=12)
    assert value == pytest.approx(_brute_mmd2(x, y), rel=1e-9) and spread == 0
    same, _ = kid(rng.normal(size=(200, 8)), rng.normal(size=(200, 8)), subsets=10, subset_size=100)
    shifted, _ = kid(rng.normal(size=(200, 8)), rng.normal(1.0, 1, size=(200, 8)), subsets=10, subset_size=100)
    assert abs(same) < 0.05 < shifted  # unbiased: ~0 for equal distributions (may dip below 0)
    with pytest.raises(ValueError):
        kid(x[:1], y)


@pytest.mark.parametrize("m_true", [0.5, 1.0, 2.0])
def test_nakagami_recovers_the_shape_of_a_synthetic_envelope(m_true):
    rng = np.random.default_rng(1)
    dr = 50.0
    envelope = np.sqrt(rng.gamma(m_true, 1.0 / m_true, size=(256, 256)))  # Nakagami(m, Ω = 1)
    envelope *= 10 ** (dr / 20) / 30  # place it inside the displayed range
    img = np.clip(20 * np.log10(envelope) / dr * 255, 0, 255)  # log compression, kept as float (no quantisation)
    est = nakagami(img, dr, window=32, min_level=0)
    assert est["blocks"] == 64 and est["m"] == pytest.approx(m_true, rel=0.2)


def test_nakagami_skips_background_and_says_when_there_is_no_tissue():
    img = np.zeros((64, 64))
    assert nakagami(img)["blocks"] == 0
    img[:32] = np.random.default_rng(2).integers(60, 200, (32, 64))
    assert nakagami(img, window=16)["blocks"] == 8


def test_invented_structure_ignores_a_grey_map_and_finds_a_painted_blob():
    """Known answers: a monotone grey map of the input invents nothing; a 16-px dark disc painted into uniform
    tissue is found, about its size (widened by the low-pass); new speckle over the same anatomy is not structure."""
    from usnst.offline.realism import invented_structure
    from usnst_io.media import to_uint8
    from usnst_stream.phantom import PhantomRenderer, uniform_cyst_frame

    frame = uniform_cyst_frame(160, 160, seed=0)
    source = to_uint8(frame)
    assert invented_structure(to_uint8(frame ** 0.6), source) == {"share": 0.0, "largest_blob_px": 0.0,
                                                                   "pixels": invented_structure(source, source)["pixels"]}
    painted = source.copy()
    cv2.circle(painted, (50, 120), 8, 0, -1)
    found = invented_structure(painted, source)
    assert 0.005 < found["share"] < 0.08 and 14 <= found["largest_blob_px"] <= 24
    scene = PhantomRenderer(160, 160, seed=3)
    hq, oracle = scene.render(0.0).hq, PhantomRenderer(160, 160, seed=3, speckle_seed=9).render(0.0).hq
    assert invented_structure(to_uint8(oracle), to_uint8(hq))["largest_blob_px"] < 6


def test_a_shipped_model_invents_no_blob_on_another_simulators_uniform_frame():
    """A linear array's uniform speckle with one cyst (formed unlike the phantom): whatever the model makes of it,
    no region wider than 8 px may differ from the input's anatomy."""
    from usnst.engines.base import EngineOptions
    from usnst.engines.registry import load_engine
    from usnst.offline.realism import invented_structure
    from usnst_io.media import to_uint8
    from usnst_stream.phantom import uniform_cyst_frame

    frame = uniform_cyst_frame(256, 256, seed=1)
    engine = load_engine("lq2hq_fast", "torch", EngineOptions(noise="fixed", threads=1))
    found = invented_structure(to_uint8(engine.infer(frame)), to_uint8(frame))
    assert found["largest_blob_px"] <= 8 and found["share"] < 0.01


def test_a_c2st_holds_out_whole_recordings_of_each_side_or_whole_scenes_of_both():
    """Issue 28: real frames are split by recording (frames of one cine are near-copies); six recordings against 48
    outputs still leave recordings to test on; paired scenes are held out with both their sides."""
    from usnst.offline.realism import held_out_groups

    outputs = np.repeat(np.arange(48), 5)  # 48 images, 5 patches each
    recordings = 100 + np.repeat(np.arange(6), 40)  # 6 recordings, 40 patches each
    for seed in range(20):
        held = held_out_groups(outputs, recordings, 0.3, np.random.default_rng(seed))
        assert len(held & set(outputs.tolist())) == 14 and len(held & set(recordings.tolist())) == 2
    paired = held_out_groups(outputs, outputs, 0.3, np.random.default_rng(0))
    assert len(paired) == 14 and paired <= set(outputs.tolist())
