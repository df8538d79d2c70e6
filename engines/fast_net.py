"""A CPU real-time transform net, distilled from the full Johnson net (trainer/distill.py).

Two cores reach ~40–66 GFLOP/s, so 30 frames/s at 512² allows ≲ 2 GFLOP per frame; the Johnson net costs 75 (width
32) or ~19 (width 16). This net spends almost nothing at full resolution: the frame is folded into 16 channels at a
quarter of its size (pixel unshuffle, lossless), a few depthwise-separable residual blocks work there, and a pixel
shuffle unfolds the result, added to the input (the net learns a correction, not the whole image).
It has no noise injection: distilled from a pixel-loss teacher, it would learn to ignore it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class FastNetConfig:
    channels: int = 48
    blocks: int = 6
    factor: int = 4  # space-to-depth factor
    noise: bool = False  # kept for the checkpoint/engine interface; this net has no noise layers
    arch: str = "fast"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FastNetConfig":
        return cls(**{k: d[k] for k in ("channels", "blocks", "factor") if k in d})


class SeparableBlock(nn.Module):
    """Depthwise 3×3 then pointwise 1×1, residual: a 3×3 receptive field for ~1/9 of a full conv's cost."""

    def __init__(self, c: int):
        super().__init__()
        self.depthwise = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.pointwise = nn.Conv2d(c, c, 1)

    def forward(self, x):
        return x + self.pointwise(F.relu(self.depthwise(x)))


class FastNet(nn.Module):
    def __init__(self, config: FastNetConfig = FastNetConfig()):
        super().__init__()
        self.config = config
        f2 = config.factor ** 2
        self.unshuffle = nn.PixelUnshuffle(config.factor)
        self.head = nn.Conv2d(f2, config.channels, 3, padding=1)
        self.blocks = nn.Sequential(*[SeparableBlock(config.channels) for _ in range(config.blocks)])
        self.tail = nn.Conv2d(config.channels, f2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(config.factor)

    def padded_size(self, h: int, w: int) -> tuple[int, int]:
        f = self.config.factor
        return max(2 * f, (h + f - 1) // f * f), max(2 * f, (w + f - 1) // f * f)

    def pad_mode(self, h: int, w: int) -> str:
        ph, pw = self.padded_size(h, w)
        return "reflect" if ph - h < h and pw - w < w else "replicate"

    def noise_shapes(self, n: int, h: int, w: int) -> list:
        return []

    def make_noise(self, x, generator=None) -> list:
        return []

    def forward(self, x: torch.Tensor, noise=None) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = self.padded_size(h, w)
        if (ph, pw) != (h, w):
            x = F.pad(x, (0, pw - w, 0, ph - h), mode=self.pad_mode(h, w))
        return self.body(x)[..., :h, :w]

    def body(self, x: torch.Tensor, noise=None) -> torch.Tensor:
        y = F.relu(self.head(self.unshuffle(x)))
        return x + self.shuffle(self.tail(self.blocks(y)))


def conv_gflops(model: nn.Module, h: int, w: int) -> float:
    """GFLOP (2 × multiply-accumulates of every conv) for one h×w frame, counted by running it once."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total += 2 * k * output.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            x = torch.zeros(1, 1, h, w)
            model(x, [torch.zeros(s) for s in model.noise_shapes(1, h, w)] or None)
    finally:
        for handle in handles:
            handle.remove()
    return total / 1e9
