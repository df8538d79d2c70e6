"""Image quality metrics as the thesis reports them."""
from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

from usnst.engines.acoustics import MEASURED_DYNAMIC_RANGE_DB
from usnst_io.media import to_float


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


def score_pair(output: np.ndarray, target: np.ndarray, source: np.ndarray | None = None) -> dict[str, float]:
    """The paired scores every tool reports: SSIM and PSNR of ``output`` against ``target`` and, given the
    ``source`` the output was made from, the same for the source itself (the identity baseline a model must beat)."""
    if output.shape != target.shape:
        raise ValueError(f"output {output.shape} and target {target.shape} differ in size")
    row = {"ssim": ssim(output, target), "psnr": psnr(output, target)}
    if source is not None:
        row.update(identity_ssim=ssim(source, target), identity_psnr=psnr(source, target))
    return row


def mean_scores(rows: list[dict], prefix: str = "") -> dict[str, float]:
    """Mean of every numeric key over the rows, finite values only (PSNR of identical images is +inf)."""
    keys = dict.fromkeys(k for r in rows for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    out = {}
    for key in keys:
        vals = [r[key] for r in rows if key in r and np.isfinite(r[key])]
        out[f"{prefix}{key}"] = float(np.mean(vals)) if vals else float("nan")
    return out


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
            chunk = [torch.from_numpy(to_float(im))[None]
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


def kid(features_a: np.ndarray, features_b: np.ndarray, subsets: int = 20, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018): the unbiased MMD² between two feature sets with the
    cubic polynomial kernel k(x, y) = (x·y / d + 1)³, averaged over random subsets. Unlike FID it has no bias
    that depends on the sample count, so it is meaningful on small sets. Returns (mean, std) over subsets."""
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    d = a.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
        off = m * (m - 1)
        values.append((kxx.sum() - np.trace(kxx)) / off + (kyy.sum() - np.trace(kyy)) / off - 2 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


def nakagami(image: np.ndarray, dynamic_range_db: float = MEASURED_DYNAMIC_RANGE_DB, window: int = 16, min_level: int = 10,
             mask: np.ndarray | None = None) -> dict:
    """Nakagami shape m and scale Ω of the speckle envelope, by moments over tissue windows.

    B-mode images are log-compressed envelopes, so the envelope is recovered first: R = 10^(I/255 · DR/20) for a
    display dynamic range DR (dB; the phantom uses 45–55). m = E[R²]² / Var(R²) (m = 1: fully developed speckle,
    Rayleigh; m < 1: pre-Rayleigh, sparse strong scatterers; m > 1: more regular structure), Ω = E[R²], computed
    per window×window block whose pixels are all at least ``min_level`` (inside the imaging sector, not shadow)
    and reported as the median over blocks, with the number of blocks used. With ``mask`` (e.g. tissue from a label
    map, offline.realism.tissue_mask) the blocks are those wholly inside it instead."""
    img = np.asarray(image, np.float64)
    envelope = 10.0 ** (img / 255.0 * dynamic_range_db / 20.0)
    h, w = (img.shape[0] // window) * window, (img.shape[1] // window) * window
    blocks = envelope[:h, :w].reshape(h // window, window, w // window, window).swapaxes(1, 2)
    levels = img[:h, :w].reshape(h // window, window, w // window, window).swapaxes(1, 2)
    if mask is None:
        keep = levels.min(axis=(2, 3)) >= min_level
    else:
        keep = mask[:h, :w].reshape(h // window, window, w // window, window).swapaxes(1, 2).all(axis=(2, 3))
    if not keep.any():
        return {"m": float("nan"), "omega": float("nan"), "blocks": 0}
    power = blocks[keep].reshape(int(keep.sum()), -1) ** 2
    omega = power.mean(axis=1)
    var = power.var(axis=1)
    valid = var > 0
    m = omega[valid] ** 2 / var[valid]
    # Ω relative to the block's own maximum possible power, so it is comparable between images of one DR
    return {"m": float(np.median(m)) if valid.any() else float("nan"),
            "omega": float(np.median(omega / 10.0 ** (dynamic_range_db / 10.0))), "blocks": int(keep.sum())}
