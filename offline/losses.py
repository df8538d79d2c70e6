"""The loss terms every optimisation and training in usnst is built from, in one place: content (feature MSE), style
(Gram matrices, whole-image or per segmentation label), and the pixel terms of paired training. Optimisation NST
(offline.nst) and the trainers (trainer/) compose these; a new loss goes here beside its siblings.

Style as the thesis defines it (Gatys et al. 2016, Eq. 2.5): mean over the style layers of ‖G(out) − G(style)‖²,
each Gram normalised by its feature size so layers of different sizes weigh alike.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

CONTENT_LAYER = "block5_conv2"
STYLE_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")


def gram(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) → (N, C, C) = F Fᵀ / (C·H·W): normalised by feature size so layers of different sizes
    weigh alike."""
    n, c, h, w = features.shape
    f = features.reshape(n, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


def masked_gram(features: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Gram of the features inside ``mask`` (N, 1, H, W), normalised by the mask's area instead of H·W, so the
    texture of a small region counts as much as that of a large one. An all-ones mask gives ``gram``."""
    n, c, h, w = features.shape
    f = (features * mask).reshape(n, c, h * w)
    area = mask.reshape(n, -1).sum(dim=1).clamp_min(eps).view(n, 1, 1)
    return f @ f.transpose(1, 2) / (c * area)



@dataclass
class StyleTarget:
    """Target Grams per style layer: ``whole[layer]`` for plain NST, or ``by_label[label][layer]`` for the
    augmented loss."""

    whole: dict[str, torch.Tensor] = field(default_factory=dict)
    by_label: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)

    @property
    def layers(self) -> list[str]:
        return list(self.whole or next(iter(self.by_label.values()), {}))


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Feature MSE at the content layer."""
    return F.mse_loss(features, target)


def _gram_distance(g: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """‖G − G_target‖² per sample, averaged over the batch."""
    return ((g - target) ** 2).sum(dim=(-2, -1)).mean()


def style_loss(features: dict[str, torch.Tensor], target: StyleTarget,
               out_masks: dict[int, dict[str, torch.Tensor]] | None = None) -> torch.Tensor:
    """Mean over layers of the Gram distance to ``target``. A per-label target (augmented loss) compares masked
    Grams, the output's features masked by ``out_masks[label][layer]``, over the labels both sides have."""
    if target.by_label:
        labels = [k for k in target.by_label if k in (out_masks or {})]
        if not labels:
            raise ValueError("no segmentation label is common to the content and the style")
        per_label = [torch.stack([_gram_distance(masked_gram(features[l], out_masks[k][l]), g)
                                  for l, g in target.by_label[k].items()]).mean() for k in labels]
        return torch.stack(per_label).mean()
    return torch.stack([_gram_distance(gram(features[l]), g) for l, g in target.whole.items()]).mean()


def pixel_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 to the paired target (the supervised models' loss; beyond the thesis for perceptual training)."""
    return F.l1_loss(output, target)


def ssim_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 − SSIM to the paired target, with the differentiable SSIM that equals the reported metric."""
    from offline.ssim_torch import ssim

    return 1 - ssim(output.float().clamp(0, 1), target.float())
