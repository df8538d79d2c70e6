"""Metrics: SSIM agrees with scikit-image, PSNR as the thesis defines it, Fréchet distance checked independently."""
import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from usnst.offline.inception import load_inception
from usnst.offline.metrics import (
    fid,
    frechet_distance,
    gaussian_stats,
    inception_features,
    patches,
    psnr,
    ssim,
)
from usnst.offline.weights import WeightsNotFound


def test_ssim_agrees_with_scikit_image():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (64, 80), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 20, a.shape), 0, 255).astype(np.uint8)
    assert ssim(b, a) == structural_similarity(b, a, data_range=255)
    fa, fb = a / 255.0, b / 255.0
    assert ssim(fb, fa) == pytest.approx(structural_similarity(fb, fa, data_range=1.0))
    assert ssim(a, a) == 1.0


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 1.0])  # standard deviations
    expected = ((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum()
    assert frechet_distance(mu1, np.diag(s1 ** 2), mu2, np.diag(s2 ** 2)) == pytest.approx(expected)


def test_frechet_distance_matches_an_eigendecomposition_computation():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(200, 6)), rng.normal(size=(150, 6)) @ rng.normal(size=(6, 6)) + 0.5
    mu1, c1 = gaussian_stats(a)
    mu2, c2 = gaussian_stats(b)
    # Tr((C1 C2)^½) = Σ √λ of the symmetric PSD matrix C1^½ C2 C1^½ (same eigenvalues as C1 C2).
    w, v = np.linalg.eigh(c1)
    r = v @ np.diag(np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(r @ c2 @ r), 0, None)).sum()
    independent = ((mu1 - mu2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * tr_sqrt
    assert fid(a, b) == pytest.approx(independent, rel=1e-6)
    assert fid(a, a) == pytest.approx(0.0, abs=1e-6)


def test_patches_tile_a_regular_grid():
    img = np.arange(700 * 650).reshape(700, 650)
    tiles = patches(img, 299)
    assert len(tiles) == 4 and all(t.shape == (299, 299) for t in tiles)
    assert tiles[3][0, 0] == img[299, 299]
    assert len(patches(np.zeros((100, 100)), 299)) == 1


def test_inception_gives_2048_features_and_loads_a_torchvision_state_dict(tmp_path):
    model = load_inception("random", seed=0)
    feats = inception_features(model, [np.zeros((80, 90), np.uint8), np.full((80, 90), 200, np.uint8)])
    assert feats.shape == (2, 2048) and np.isfinite(feats).all() and not np.allclose(feats[0], feats[1])
    state = {**model.state_dict(), "fc.weight": torch.zeros(1000, 2048), "AuxLogits.fc.bias": torch.zeros(1000)}
    torch.save(state, tmp_path / "inception.pth")
    again = load_inception(tmp_path / "inception.pth")
    assert np.allclose(inception_features(again, [np.zeros((80, 90), np.uint8)]), feats[:1], atol=1e-5)


def test_missing_inception_weights_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("USNST_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(WeightsNotFound, match="pass --inception-weights PATH"):
        load_inception(None, download=False)


def test_psnr_of_a_uniform_error():
    t = np.full((4, 4), 200.0)
    assert psnr(t + 2, t) == pytest.approx(20 * np.log10(200 / 2))


def test_low_rank_fid_equals_the_sqrtm_computation():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(9, 40))
    b = rng.normal(size=(7, 40)) * 1.5 + 0.3
    reference = frechet_distance(*gaussian_stats(a), *gaussian_stats(b))  # scipy sqrtm path
    assert fid(a, b) == pytest.approx(reference, rel=1e-5)
    with pytest.raises(ValueError, match="two samples"):
        fid(a[:1], b)


def test_random_inception_features_tell_images_apart():
    """Seeded random weights are for exercising FID end to end: features must not collapse to one point."""
    from usnst.offline.inception import load_inception

    model = load_inception("random")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (64, 64), dtype=np.uint8) for _ in range(3)] + [np.zeros((64, 64), np.uint8)]
    f = inception_features(model, images)
    assert np.abs(f[0] - f[3]).max() > 1e-3 * max(np.abs(f).max(), 1e-12) and np.abs(f).max() > 1e-3
