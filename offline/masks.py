"""Segmentation masks for the augmented style loss, brought to VGG19's feature sizes (the masked Gram matrices
they feed live with the other losses, in offline.losses).

The thesis' augmented style loss compares textures per anatomical label: a binary mask per label, carried down
VGG19 by operations that mirror its layers — a "fake conv" (3×3 average, same size) for every conv and a
"fake pool" (nearest halving) for every max-pool — so a mask and a feature map always have the same size and
roughly the same receptive field.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

FETUS_RANGE = (150, 220)  # thesis: fetus labels
MIN_AREA = 0.0025  # thesis: keep a label's mask only if it covers more than 0.25 % of the image


def fake_conv(mask: torch.Tensor) -> torch.Tensor:
    """3×3 average with replicate padding: what a 3×3 'same' conv does to a region's footprint."""
    return F.avg_pool2d(F.pad(mask, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


def fake_pool(mask: torch.Tensor) -> torch.Tensor:
    """Nearest halving with floor sizes, matching a 2×2 stride-2 max-pool's output size."""
    h, w = mask.shape[-2:]
    return mask[..., 0:2 * (h // 2):2, 0:2 * (w // 2):2]


def masks_for_layers(mask: torch.Tensor, layers: list[str], vgg) -> dict[str, torch.Tensor]:
    """``mask`` (N, 1, H, W) carried to each named layer's feature size through the same sequence of convs and
    pools VGG19 applies before that layer."""
    order = vgg.convs_before(max(layers, key=lambda n: vgg.index[n]))
    wanted, out, current, block = set(layers), {}, mask, 1
    for name in order:
        b = int(name.split("_")[0][len("block"):])
        while block < b:  # a pool closes every block
            current = fake_pool(current)
            block += 1
        current = fake_conv(current)
        if name in wanted:
            out[name] = current
    return out


def label_masks(seg: np.ndarray, label_range=FETUS_RANGE, min_area: float = MIN_AREA) -> dict[int, np.ndarray]:
    """One float mask per label in ``label_range`` whose area exceeds ``min_area`` of the image."""
    masks = {}
    for label in np.unique(seg):
        if label_range[0] <= label <= label_range[1]:
            m = seg == label
            if m.mean() > min_area:
                masks[int(label)] = m.astype(np.float32)
    return masks


def object_mask(seg: np.ndarray, label_range=FETUS_RANGE) -> np.ndarray:
    """The whole object (every fetus label together)."""
    return ((seg >= label_range[0]) & (seg <= label_range[1])).astype(np.float32)


def foreground_mask(seg: np.ndarray) -> np.ndarray:
    """Everything imaged (label > 0): used after optimisation to clear noise outside the scan sector."""
    return (seg > 0).astype(np.float32)
