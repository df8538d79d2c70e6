"""Johnson-style image transform network for 1-channel ultrasound frames.

After Johnson et al. (2016) and pytorch/examples fast_neural_style: a conv encoder, residual blocks,
and an upsample+conv decoder, with instance normalisation and reflection padding. The thesis adds
noise injection in the decoder (StyleGAN-like): a per-channel learned weight times one Gaussian
noise plane, active at inference, so the network can synthesise speckle it cannot infer from the input.

The noise is an explicit input of ``forward`` rather than drawn inside the graph: TensorRT and ONNX
freeze in-graph random ops at build time, so every backend feeds noise from outside the same way.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn
from torch.nn import functional as F

from usnst.engines.geometry import FrameGeometry, FrameNet, echo_region
from usnst_io.limits import check_config


@dataclass(frozen=True)
class NetConfig:
    """Shape of a transform net; stored in every checkpoint so a file rebuilds its own network."""

    width: int = 32  # channels of the first conv; the thesis net uses 32 → 64 → 128
    n_residual: int = 5
    noise: bool = True  # noise-injection layers in the decoder
    echo_mask: bool = False  # output black where the input has no echo (geometry.echo_region)
    residual: bool = False  # output = input + net: the net learns a correction, anatomy comes through unchanged
    skip_kernel: int = 0  # residual only: > 0 passes the input through a learned k×k filter instead of unchanged

    def __post_init__(self):  # a config read from a file asks for no more than this net means (width 128: ~300 MB)
        check_config(self, {"width": (1, 128), "n_residual": (0, 16), "skip_kernel": (0, 31)})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "NetConfig":
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


class ConvLayer(nn.Module):
    """Reflection padding then conv: zero padding would darken the frame border."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1):
        super().__init__()
        self.pad = nn.ReflectionPad2d(kernel // 2)
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride)

    def forward(self, x):
        return self.conv(self.pad(x))


class ResidualBlock(nn.Module):
    """Two 3×3 convs with a skip: lets the net learn a correction to its input (He et al. 2016)."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1 = ConvLayer(c, c, 3)
        self.in1 = nn.InstanceNorm2d(c, affine=True)
        self.conv2 = ConvLayer(c, c, 3)
        self.in2 = nn.InstanceNorm2d(c, affine=True)

    def forward(self, x):
        y = F.relu(self.in1(self.conv1(x)))
        return x + self.in2(self.conv2(y))


class UpsampleConvLayer(nn.Module):
    """Nearest ×2 upsampling then conv, instead of a transposed conv, to avoid checkerboard artifacts
    (Odena et al. 2016) that would read as false speckle in ultrasound."""

    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__()
        self.conv = ConvLayer(c_in, c_out, kernel)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class NoiseInjection(nn.Module):
    """x + w_c · n: one Gaussian noise plane shared by all channels, scaled by a learned weight per channel
    (StyleGAN, Karras et al. 2019). Starts at zero so a fresh net is noise-free until training asks for it."""

    def __init__(self, c: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(c))

    def forward(self, x, noise):
        return x + self.weight.view(1, -1, 1, 1) * noise


class SkipFilter(nn.Module):
    """The residual skip as a learned k×k filter, starting as the identity. Why: the encoder halves the size twice,
    so texture finer than its quarter-size grid (above 0.125 cycles/px) reaches the output only through the skip.
    Passed unchanged, the input's fine texture is the output's: a squared-error net kept LQ's axial grain at
    0.22–0.3 cycles/px at full power over a suppressed 0.1–0.2 band (a notched spectrum a patch classifier reads),
    and could not weigh it by how far it predicts HQ. A full-size filter on the skip lets the loss choose."""

    def __init__(self, kernel: int):
        super().__init__()
        self.pad = nn.ReflectionPad2d(kernel // 2)
        self.conv = nn.Conv2d(1, 1, kernel, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0, kernel // 2, kernel // 2] = 1.0

    def forward(self, x):
        return self.conv(self.pad(x))


class TransformerNet(FrameNet):
    """Frame in [0, 1], shape (N, 1, H, W), any H and W → stylized frame of the same shape.

    Two stride-2 convs divide the size by 4, so the input is reflection-padded to a multiple of 4 and
    the output cropped back (``geometry``; ``FrameNet.forward``); the net is fully convolutional otherwise.
    """

    def __init__(self, config: NetConfig = NetConfig()):
        super().__init__()
        self.config = config
        w = config.width
        self.conv1 = ConvLayer(1, w, 9)
        self.in1 = nn.InstanceNorm2d(w, affine=True)
        self.conv2 = ConvLayer(w, 2 * w, 3, stride=2)
        self.in2 = nn.InstanceNorm2d(2 * w, affine=True)
        self.conv3 = ConvLayer(2 * w, 4 * w, 3, stride=2)
        self.in3 = nn.InstanceNorm2d(4 * w, affine=True)
        self.res = nn.Sequential(*[ResidualBlock(4 * w) for _ in range(config.n_residual)])
        self.deconv1 = UpsampleConvLayer(4 * w, 2 * w, 3)
        self.in4 = nn.InstanceNorm2d(2 * w, affine=True)
        self.deconv2 = UpsampleConvLayer(2 * w, w, 3)
        self.in5 = nn.InstanceNorm2d(w, affine=True)
        self.deconv3 = ConvLayer(w, 1, 9)
        if config.noise:
            self.noise1 = NoiseInjection(2 * w)
            self.noise2 = NoiseInjection(w)
        if config.skip_kernel and (not config.residual or config.skip_kernel % 2 == 0):
            raise ValueError(f"skip_kernel needs residual=True and an odd size, got {config.skip_kernel}")
        self.skip = SkipFilter(config.skip_kernel) if config.skip_kernel else nn.Identity()  # no weights when plain

    @property
    def geometry(self) -> FrameGeometry:
        """Two stride-2 convs: padded to a multiple of 4, at least 8 (the 9×9 convs' reflection padding needs room);
        noise planes at half size (after deconv1) and full size (after deconv2)."""
        return FrameGeometry(4, 8, (2, 1) if self.config.noise else ())

    def body(self, x: torch.Tensor, noise: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The network proper, on a frame already padded by ``geometry``: the part compiled backends export."""
        y = F.relu(self.in1(self.conv1(x)))
        y = F.relu(self.in2(self.conv2(y)))
        y = F.relu(self.in3(self.conv3(y)))
        y = self.res(y)
        y = self.deconv1(y)
        if self.config.noise:
            y = self.noise1(y, noise[0])
        y = F.relu(self.in4(y))
        y = self.deconv2(y)
        if self.config.noise:
            y = self.noise2(y, noise[1])
        y = F.relu(self.in5(y))
        out = self.deconv3(y)
        if self.config.residual:  # realism training: speckle is a correction to the frame, anatomy passes through
            out = self.skip(x) + out
        return out * echo_region(x) if self.config.echo_mask else out
