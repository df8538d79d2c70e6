"""Image quality metrics as the thesis reports them."""
from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity


def psnr(output: np.ndarray, target: np.ndarray) -> float:
    """PSNR = 20·log10(max(I) / √MSE) with the peak taken from the *target* image (thesis definition),
    not the dtype's range; identical images give +inf."""
    output = np.asarray(output, np.float64)
    target = np.asarray(target, np.float64)
    mse = np.mean((output - target) ** 2)
    if mse == 0:
        return float("inf")
    return float(20 * np.log10(target.max() / np.sqrt(mse)))


def ssim(output: np.ndarray, target: np.ndarray, data_range: float | None = None) -> float:
    """scikit-image's SSIM (Wang et al. 2004, 7×7 uniform window) on grayscale images.
    ``data_range`` defaults to the dtype's range for integers and 1.0 for floats in [0, 1]."""
    if data_range is None:
        data_range = float(np.iinfo(target.dtype).max) if np.issubdtype(target.dtype, np.integer) else 1.0
    return float(structural_similarity(output, target, data_range=data_range))


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray, eps: float = 1e-6) -> float:
    """‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^½) between two Gaussians (Heusel et al. 2017), with scipy's sqrtm.
    Few samples make Σ singular; then a small ridge keeps the square root finite."""
    from scipy import linalg

    diff = mu1 - mu2
    covmean = linalg.sqrtm(cov1 @ cov2)
    if not np.isfinite(covmean).all():
        ridge = np.eye(cov1.shape[0]) * eps
        covmean = linalg.sqrtm((cov1 + ridge) @ (cov2 + ridge))
    covmean = np.real(covmean)  # numerical error leaves a tiny imaginary part
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(covmean))


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def patches(img: np.ndarray, size: int = 299, stride: int | None = None) -> list[np.ndarray]:
    """Tiles of size×size on a regular grid (the thesis' 299×299 FID patches); an image smaller than a tile is
    one patch as it is (the network resizes it)."""
    stride = stride or size
    h, w = img.shape[:2]
    if h < size or w < size:
        return [img]
    return [img[i:i + size, j:j + size] for i in range(0, h - size + 1, stride) for j in range(0, w - size + 1, stride)]


def inception_features(model, images: list[np.ndarray], batch: int = 16) -> np.ndarray:
    """(N, 2048) pool features of uint8 or [0, 1] grayscale images."""
    import torch

    out = []
    with torch.inference_mode():
        for k in range(0, len(images), batch):
            chunk = [torch.from_numpy(np.asarray(im, np.float32) / (255.0 if im.dtype == np.uint8 else 1.0))[None]
                     for im in images[k:k + batch]]
            sizes = {c.shape for c in chunk}
            if len(sizes) == 1:
                out.append(model(torch.stack(chunk)).numpy())
            else:
                out += [model(c[None]).numpy() for c in chunk]
    return np.concatenate(out).astype(np.float64)


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID between two feature sets (rows are samples).

    With fewer samples than dimensions (per-image FID over a handful of 299×299 patches, 2048-d features) the
    covariances have rank < n, and Tr((Σ₁Σ₂)^½) is exactly Σ σᵢ(X₁X₂ᵀ) / √((n₁−1)(n₂−1)) for the centred sample
    matrices X: the non-zero eigenvalues of Σ₁Σ₂ are the squared singular values of X₁X₂ᵀ over (n₁−1)(n₂−1).
    That takes milliseconds where scipy's sqrtm of the 2048×2048 product takes ~15 s (measured on 2 cores), and it
    is checked against sqrtm in the tests. Otherwise scipy's sqrtm is used."""
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    (na, d), nb = a.shape, b.shape[0]
    if min(na, nb) < 2:
        raise ValueError("FID needs at least two samples on each side")
    if min(na, nb) >= d:
        return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))
    xa, xb = a - a.mean(0), b - b.mean(0)
    tr_a = (xa ** 2).sum() / (na - 1)
    tr_b = (xb ** 2).sum() / (nb - 1)
    tr_sqrt = np.linalg.svd(xa @ xb.T, compute_uv=False).sum() / np.sqrt((na - 1) * (nb - 1))
    diff = a.mean(0) - b.mean(0)
    return float(diff @ diff + tr_a + tr_b - 2 * tr_sqrt)
