"""A CPU real-time transform net, distilled from the full Johnson net (trainer/distill.py).

Two cores reach ~40–66 GFLOP/s, so 30 frames/s at 512² allows ≲ 2 GFLOP per frame; the Johnson net costs 75 (width
32) or ~19 (width 16). This net spends almost nothing at full resolution: the frame is folded into 16 channels at a
quarter of its size (pixel unshuffle, lossless), a few depthwise-separable residual blocks work there, and a pixel
shuffle unfolds the result, added to the input (the net learns a correction, not the whole image).

Noise injection (``noise=True``) gives it one full-resolution noise plane, folded by the same pixel unshuffle into
factor² channels beside the frame's, so every output pixel has its own noise sample and the blocks decide, from
the anatomy around it, how much speckle to make of it. The noise half of the head starts at zero: a fresh or
distilled net ignores the noise until a distribution-matching loss asks for it.

The speckle head (``speckle=True``) makes speckle the way a scanner does instead of asking convolutions to invent
it: two full-resolution noise planes are the real and imaginary parts of a scatterer field, blurred by a learned
point-spread function; the log of their envelope (Rayleigh, as fully developed speckle is) is added to the net's
*base* image — the local mean grey — with a per-pixel contrast the net predicts (the display's dB scale). So the
grain's distribution is right by construction and training only has to fit its size, contrast and the anatomy.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from usnst.engines.acoustics import EULER_GAMMA
from usnst.engines.geometry import FrameGeometry, FrameNet, echo_region
from usnst_io.limits import check_config


@dataclass(frozen=True)
class FastNetConfig:
    channels: int = 48
    blocks: int = 6
    factor: int = 4  # space-to-depth factor
    noise: bool = False  # one full-resolution noise plane, folded in beside the frame
    echo_mask: bool = False  # output black where the input has no echo (geometry.echo_region)
    speckle: bool = False  # a speckle head: log-envelope of PSF-blurred complex noise on a base image
    speckle_psf: str = "free"  # its PSF: "free" (any 7×7 kernel) or "gaussian" (learned axial and lateral widths)
    arch: str = "fast"

    def __post_init__(self):  # a config read from a file asks for no more than this net means
        check_config(self, {"channels": (1, 512), "blocks": (0, 64), "factor": (1, 16),
                            "speckle_psf": ("free", "gaussian"), "arch": ("fast",)})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FastNetConfig":
        keys = ("channels", "blocks", "factor", "noise", "echo_mask", "speckle", "speckle_psf")
        return cls(**{k: d[k] for k in keys if k in d})


class SeparableBlock(nn.Module):
    """Depthwise 3×3 then pointwise 1×1, residual: a 3×3 receptive field for ~1/9 of a full conv's cost."""

    def __init__(self, c: int):
        super().__init__()
        self.depthwise = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.pointwise = nn.Conv2d(c, c, 1)

    def forward(self, x):
        return x + self.pointwise(F.relu(self.depthwise(x)))


DB_CONTRAST = 20 / math.log(10) / 55  # grey per neper of envelope on a 55 dB display (the phantom's HQ)


def _gaussian_psf(size: int, sigma_x: float | torch.Tensor, sigma_y: float | torch.Tensor) -> torch.Tensor:
    """A size×size Gaussian of unit energy; tensor widths keep it differentiable (a learned PSF)."""
    r = torch.arange(size, dtype=torch.float32, device=getattr(sigma_x, "device", None)) - size // 2
    k = torch.exp(-r[None, :] ** 2 / (2 * sigma_x ** 2) - r[:, None] ** 2 / (2 * sigma_y ** 2))
    return k / k.norm()


class SpeckleHead(nn.Module):
    """Speckle as a scanner forms it: two noise planes (real, imaginary scatterer amplitudes) blurred by a learned
    point-spread function; the envelope's log, centred to zero mean, times a per-pixel contrast, added to a base.

    The PSF is normalised to unit energy, so each blurred plane has unit variance and R² = (a² + b²)/2 is
    exponential with mean 1: E[ln R] = −γ/2 exactly, and the centred log-envelope has zero mean — the base stays the
    local mean grey whatever the PSF learns. A 3×3 kernel after the log (normalised to sum 1) stands for the scan
    conversion's interpolation, which averages log-compressed samples and makes the phantom's speckle a little
    smoother (m ≈ 1.2) than a pure Rayleigh field (m = 1).

    ``psf="free"`` learns any 7×7 kernel. Trained adversarially it collapsed to a near-delta with ±0.1 ripples of both
    signs (stage s4 of the lq2hq_fast card): nearly white speckle whose bright grains are single pixels, where a
    scanner's are PSF-sized blobs. ``psf="gaussian"`` learns only the axial and lateral widths of a Gaussian, as the
    phantom's (and a scanner's) PSF is."""

    SHAPES = ("free", "gaussian")

    def __init__(self, size: int = 7, psf: str = "free"):
        super().__init__()
        if psf not in self.SHAPES:
            raise ValueError(f"speckle PSF must be one of {self.SHAPES}, got {psf!r}")
        self.shape, self.size = psf, size
        if psf == "free":
            self.psf = nn.Parameter(_gaussian_psf(size, 1.0, 0.8)[None, None])
        else:  # log σ (px), lateral then axial; starts as the free kernel does
            self.log_sigma = nn.Parameter(torch.log(torch.tensor([1.0, 0.8])))
        self.post = nn.Parameter(torch.zeros(1, 1, 3, 3))  # softmax weights: starts as a 3×3 box… see post_kernel
        with torch.no_grad():
            self.post[0, 0, 1, 1] = 4.0  # …dominated by its centre (softmax ≈ 0.87 there)

    def post_kernel(self) -> torch.Tensor:
        return torch.softmax(self.post.flatten(), 0).view_as(self.post)

    def kernel(self) -> torch.Tensor:
        """The PSF, normalised to unit energy: (1, 1, size, size)."""
        if self.shape == "free":
            return self.psf / self.psf.norm()
        sigma_x, sigma_y = torch.exp(self.log_sigma)
        return _gaussian_psf(self.size, sigma_x, sigma_y)[None, None]

    def log_envelope(self, re: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
        """Centred ln R of the speckle these noise planes make: zero mean, unit-free."""
        psf = self.kernel()
        pad = psf.shape[-1] // 2
        a = F.conv2d(F.pad(re, (pad,) * 4, mode="reflect"), psf)
        b = F.conv2d(F.pad(im, (pad,) * 4, mode="reflect"), psf)
        log_r = 0.5 * torch.log((a * a + b * b) * 0.5 + 1e-6) + EULER_GAMMA / 2
        return F.conv2d(F.pad(log_r, (1, 1, 1, 1), mode="reflect"), self.post_kernel())

    def forward(self, base: torch.Tensor, contrast: torch.Tensor, re: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
        return torch.clamp(base + contrast * self.log_envelope(re, im), 0.0, 1.0)


class FastNet(FrameNet):
    def __init__(self, config: FastNetConfig = FastNetConfig()):
        super().__init__()
        if config.noise and config.speckle:
            raise ValueError("a fast net takes either folded noise (noise) or a speckle head (speckle), not both")
        self.config = config
        f2 = config.factor ** 2
        self.unshuffle = nn.PixelUnshuffle(config.factor)
        self.head = nn.Conv2d(2 * f2 if config.noise else f2, config.channels, 3, padding=1)
        if config.noise:
            with torch.no_grad():
                self.head.weight[:, f2:] = 0
        self.blocks = nn.Sequential(*[SeparableBlock(config.channels) for _ in range(config.blocks)])
        self.tail = nn.Conv2d(config.channels, 2 * f2 if config.speckle else f2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(config.factor)
        if config.speckle:
            self.speckle = SpeckleHead(psf=config.speckle_psf)
            with torch.no_grad():  # contrast channels start at the phantom HQ's dB scale, everywhere
                self.tail.weight[f2:] = 0
                self.tail.bias[f2:] = math.log(math.expm1(DB_CONTRAST))

    @property
    def geometry(self) -> FrameGeometry:
        """Space-to-depth by ``factor``: padded to a multiple of it, at least two folds; one full-size noise plane."""
        f = self.config.factor
        planes = (1,) if self.config.noise else (1, 1) if self.config.speckle else ()
        return FrameGeometry(f, 2 * f, planes)

    def base_and_contrast(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Speckle head only: the base image (local mean grey) and the per-pixel speckle contrast."""
        f2 = self.config.factor ** 2
        t = self.tail(self.blocks(F.relu(self.head(self.unshuffle(x)))))
        return x + self.shuffle(t[:, :f2]), F.softplus(self.shuffle(t[:, f2:]))

    def body(self, x: torch.Tensor, noise: list[torch.Tensor] | None = None) -> torch.Tensor:
        if self.config.speckle:
            base, contrast = self.base_and_contrast(x)
            out = self.speckle(base, contrast, noise[0], noise[1])
        else:
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
