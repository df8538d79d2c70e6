"""Differentiable SSIM for training, computed exactly as scikit-image's ``structural_similarity`` with its defaults
(7×7 uniform window, K1 0.01, K2 0.03, sample covariance, mean over the window-valid interior), so the number the
trainer optimises is the number the metrics report (tested against scikit-image)."""
from __future__ import annotations

import torch
from torch.nn import functional as F


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, win: int = 7) -> torch.Tensor:
    """Mean SSIM of (N, 1, H, W) batches; H and W must be at least ``win``."""
    n_px = win * win
    cov_norm = n_px / (n_px - 1)  # scikit-image's use_sample_covariance=True
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mean = lambda t: F.avg_pool2d(t, win, stride=1)  # no padding: the interior scikit-image averages over
    mx, my = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - mx * mx)
    vy = cov_norm * (mean(y * y) - my * my)
    vxy = cov_norm * (mean(x * y) - mx * my)
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean()
