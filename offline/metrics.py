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
