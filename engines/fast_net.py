"""A CPU real-time transform net, distilled from the full Johnson net (trainer/distill.py).

Two cores reach ~40–66 GFLOP/s, so 30 frames/s at 512² allows ≲ 2 GFLOP per frame; the Johnson net costs 75 (width
32) or ~19 (width 16). This net spends almost nothing at full resolution: the frame is folded into 16 channels at a
quarter of its size (pixel unshuffle, lossless), a few depthwise-separable residual blocks work there, and a pixel
shuffle unfolds the result, added to the input (the net learns a correction, not the whole image).

Noise injection (``noise=True``) gives it one full-resolution noise plane, folded by the same pixel unshuffle into
factor² channels beside the frame's, so every output pixel has its own noise sample and the blocks decide, from
the anatomy around it, how much speckle to make of it. The noise half of the head starts at zero: a fresh or
distilled net ignores the noise until a distribution-matching loss asks for it. A scanner's grain itself is formed
after the net, along the probe's beams (engines.beam_speckle).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from usnst.engines.geometry import FrameGeometry, FrameNet, echo_region
from usnst_io.limits import check_config


@dataclass(frozen=True)
class FastNetConfig:
    channels: int = 48
    blocks: int = 6
    factor: int = 4  # space-to-depth factor
    noise: bool = False  # one full-resolution noise plane, folded in beside the frame
    echo_mask: bool = False  # output black where the input has no echo (geometry.echo_region)
    arch: str = "fast"

    def __post_init__(self):  # a config read from a file asks for no more than this net means
        check_config(self, {"channels": (1, 512), "blocks": (0, 64), "factor": (1, 16), "arch": ("fast",)})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FastNetConfig":
        if d.get("speckle"):  # older files say speckle: false, speckle_psf: "free"; those keys mean nothing now
            raise ValueError("this net has a speckle head, which usnst no longer builds (it shipped in no model; "
                             "git show e069eea:engines/fast_net.py has it)")
        keys = ("channels", "blocks", "factor", "noise", "echo_mask")
        return cls(**{k: d[k] for k in keys if k in d})


class SeparableBlock(nn.Module):
    """Depthwise 3×3 then pointwise 1×1, residual: a 3×3 receptive field for ~1/9 of a full conv's cost."""

    def __init__(self, c: int):
        super().__init__()
        self.depthwise = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.pointwise = nn.Conv2d(c, c, 1)

    def forward(self, x):
        return x + self.pointwise(F.relu(self.depthwise(x)))


class FastNet(FrameNet):
    def __init__(self, config: FastNetConfig = FastNetConfig()):
        super().__init__()
        self.config = config
        f2 = config.factor ** 2
        self.unshuffle = nn.PixelUnshuffle(config.factor)
        self.head = nn.Conv2d(2 * f2 if config.noise else f2, config.channels, 3, padding=1)
        if config.noise:
            with torch.no_grad():
                self.head.weight[:, f2:] = 0
        self.blocks = nn.Sequential(*[SeparableBlock(config.channels) for _ in range(config.blocks)])
        self.tail = nn.Conv2d(config.channels, f2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(config.factor)

    @property
    def geometry(self) -> FrameGeometry:
        """Space-to-depth by ``factor``: padded to a multiple of it, at least two folds; one full-size noise plane."""
        f = self.config.factor
        planes = (1,) if self.config.noise else ()
        return FrameGeometry(f, 2 * f, planes)

    def body(self, x: torch.Tensor, noise: list[torch.Tensor] | None = None) -> torch.Tensor:
        folded = self.unshuffle(x)
        if self.config.noise:
            folded = torch.cat([folded, self.unshuffle(noise[0])], dim=1)
        y = F.relu(self.head(folded))
        out = x + self.shuffle(self.tail(self.blocks(y)))
        return out * echo_region(x) if self.config.echo_mask else out


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
