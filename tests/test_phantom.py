"""Synthetic B-mode phantoms and the thesis dataset layout."""
import numpy as np
import pytest

from usnst.engines.acoustics import FETUS_LABELS, OUTSIDE
from usnst.offline.datasets import read_triptych_folder, split_triptych
from usnst.offline.metrics import psnr, ssim
from usnst_stream.phantom import PROBES, PhantomRenderer, write_phantoms


@pytest.fixture(scope="module")
def renderer():
    return PhantomRenderer(96, 128, seed=3)


def test_render_gives_lq_hq_and_labels_in_the_thesis_convention(renderer):
    s = renderer.render(0.0)
    assert s.lq.shape == s.hq.shape == s.seg.shape == (96, 128)
    assert s.lq.dtype == s.hq.dtype == np.float32 and s.seg.dtype == np.uint8
    assert 0 <= s.hq.min() and s.hq.max() <= 1
    labels = set(np.unique(s.seg))
    assert OUTSIDE in labels  # corners outside the fan
    fetus = [l for l in labels if 150 <= l <= 220]
    assert fetus and set(fetus) <= set(FETUS_LABELS)
    assert (s.hq[s.seg == OUTSIDE] == 0).all()  # nothing is imaged outside the sector


def test_lq_is_a_degraded_view_of_the_same_scene(renderer):
    s = renderer.render(0.0)
    other = PhantomRenderer(96, 128, seed=4).render(0.0)
    inside = s.seg > 0
    same = np.corrcoef(s.lq[inside], s.hq[inside])[0, 1]
    different = np.corrcoef(s.lq[inside], other.hq[inside])[0, 1]
    assert same > 0.5 and same > different + 0.2
    assert ssim(s.lq, s.hq) < 0.95  # and yet not the same image


def test_consecutive_frames_are_coherent_and_the_probe_moves(renderer):
    a, b, far = renderer.render(0.0), renderer.render(1 / 30), renderer.render(3.0)
    near = np.corrcoef(a.hq.ravel(), b.hq.ravel())[0, 1]
    assert near > 0.8
    assert not np.array_equal(a.hq, b.hq)
    assert np.corrcoef(a.hq.ravel(), far.hq.ravel())[0, 1] < near - 0.1


def test_same_seed_same_scene():
    a = PhantomRenderer(40, 40, seed=9).render(0.5)
    b = PhantomRenderer(40, 40, seed=9).render(0.5)
    assert np.array_equal(a.hq, b.hq) and np.array_equal(a.seg, b.seg)


def test_phantoms_are_written_in_the_thesis_triptych_layout(tmp_path):
    paths = write_phantoms(tmp_path, 3, 40, 56, seed=2)
    assert [p.name for p in paths] == ["phantom_00002.png", "phantom_00003.png", "phantom_00004.png"]
    samples = read_triptych_folder(tmp_path)
    assert len(samples) == 3
    s = samples[0]
    assert s.lq.shape == s.hq.shape == s.seg.shape == (40, 56)
    assert set(np.unique(s.seg)) & set(FETUS_LABELS)
    assert not list(tmp_path.glob(".*usnst-tmp*"))


def test_split_triptych_refuses_images_that_are_not_triptychs():
    with pytest.raises(ValueError, match="divides by 3"):
        split_triptych(np.zeros((4, 10), np.uint8))


def test_psnr_uses_the_target_peak_as_the_thesis_defines():
    target = np.array([[0, 100], [50, 100]], np.uint8)
    out = target.astype(float) + np.array([[10, -10], [10, -10]])
    assert psnr(out, target) == pytest.approx(20 * np.log10(100 / 10))
    assert psnr(target, target) == float("inf")


def test_usnst_phantom_renders_each_probe_kind_and_a_folder_keeps_to_one(tmp_path):
    import json

    from usnst.cli import main

    for kind in PROBES:
        assert main(["phantom", "--out", str(tmp_path / kind), "-n", "2", "--size", "48x64", "--probe", kind]) == 0
        samples = read_triptych_folder(tmp_path / kind)
        lit = samples[0].seg > 0
        assert len(samples) == 2 and 0.2 < lit.mean() < 0.95
        assert json.loads((tmp_path / kind / "phantoms.json").read_text())["probe"] == kind
    linear = read_triptych_folder(tmp_path / "linear")[0].seg > 0
    columns = linear.any(axis=0)
    assert linear[:, columns].mean(axis=0).std() < 0.02  # a linear array's view: every column lit to the same depth
    assert main(["phantom", "--out", str(tmp_path / "linear"), "-n", "2", "--size", "48x64"]) == 2  # refused: mixed
    with pytest.raises(ValueError, match="probe kind"):
        write_phantoms(tmp_path / "x", 1, 32, 32, probe_kind="convex")


def test_a_varied_curved_array_keeps_its_face_at_the_frames_top():
    """Under --settings varied the sector changes, and with it where the face's ends lie: the frame's top follows,
    so no view starts with empty rows or loses its face."""
    from usnst_stream.phantom import acquisition, probe

    for k in range(4):
        g = acquisition("varied", np.random.default_rng(k), probe("curvilinear"))["geometry"]
        assert g.top_mm == pytest.approx(g.start_mm * np.cos(np.radians(g.sector_deg) / 2))
        rows = np.flatnonzero((PhantomRenderer(96, 96, seed=k, geometry=g).render(0.0).seg > 0).any(axis=1))
        assert abs(rows[0] - (95 - rows[-1])) <= 2  # the view centred in the frame: nothing cut, nothing left over
