"""A network's frame geometry: how a frame is padded before the body runs, which noise planes the body takes, and
how the result is cropped back. One description per network, derived from its config (``net.geometry``).

Every path that runs a net reads it from here: eager PyTorch (``forward``), the compiled bodies (torch.compile,
TensorRT: padded frame and noise planes as inputs, dynamic dimensions for torch.export), ONNX export (input names,
dynamic axes, recorded in the artifact's metadata) and ONNX Runtime inference (numpy padding). A new noise layer or a
new architecture changes its net's ``geometry`` and nothing else.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.nn import functional as F

from usnst.engines.acoustics import ECHO_LEVEL


@dataclass(frozen=True)
class FrameGeometry:
    """``multiple``: padded sizes are multiples of this (stride-2 convs, space-to-depth); ``min_size``: and at
    least this (a k×k reflection padding needs room); ``noise_scales``: one entry per noise plane the body takes,
    the plane being the padded frame divided by that scale (each scale divides ``multiple``)."""

    multiple: int
    min_size: int
    noise_scales: tuple[int, ...] = ()

    def __post_init__(self):
        bad = [s for s in self.noise_scales if s < 1 or self.multiple % s]
        if bad:
            raise ValueError(f"noise scales {bad} must divide the padding multiple {self.multiple}")

    def padded_size(self, h: int, w: int) -> tuple[int, int]:
        m = self.multiple
        return max(self.min_size, (h + m - 1) // m * m), max(self.min_size, (w + m - 1) // m * m)

    def pad_mode(self, h: int, w: int) -> str:
        """Reflection needs pad < size; tiny frames are replicated instead."""
        ph, pw = self.padded_size(h, w)
        return "reflect" if ph - h < h and pw - w < w else "replicate"

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) → padded at the bottom and right, as every backend pads."""
        h, w = x.shape[-2:]
        ph, pw = self.padded_size(h, w)
        if (ph, pw) == (h, w):
            return x
        return F.pad(x, (0, pw - w, 0, ph - h), mode=self.pad_mode(h, w))

    def pad_numpy(self, frame: np.ndarray) -> np.ndarray:
        """The same padding for a numpy (H, W) frame (numpy calls replicate 'edge')."""
        h, w = frame.shape
        ph, pw = self.padded_size(h, w)
        if (ph, pw) == (h, w):
            return frame
        mode = "reflect" if self.pad_mode(h, w) == "reflect" else "edge"
        return np.pad(frame, ((0, ph - h), (0, pw - w)), mode=mode)

    def noise_shapes(self, n: int, h: int, w: int) -> list[tuple[int, int, int, int]]:
        """Shapes of the noise planes for an (n, 1, h, w) frame (before padding); empty for a noise-free net."""
        ph, pw = self.padded_size(h, w)
        return [(n, 1, ph // s, pw // s) for s in self.noise_scales]

    @property
    def noise_names(self) -> list[str]:
        """Graph input names of the noise planes (ONNX, TensorRT)."""
        return [f"noise{i + 1}" for i in range(len(self.noise_scales))]

    def export_dims(self, kh, kw) -> tuple[dict, tuple[dict, ...]]:
        """torch.export dynamic shapes of (frame, noise planes) for padded sizes H = multiple·kh, W = multiple·kw."""
        m = self.multiple
        frame = {2: m * kh, 3: m * kw}
        return frame, tuple({2: (m // s) * kh, 3: (m // s) * kw} for s in self.noise_scales)

    def onnx_axes(self) -> dict[str, dict[int, str]]:
        """ONNX dynamic axes of the frame, the output and each noise plane."""
        axes = {"frame": {2: "H", 3: "W"}, "styled": {2: "H", 3: "W"}}
        for name, s in zip(self.noise_names, self.noise_scales):
            axes[name] = {2: "H" if s == 1 else f"H_{s}", 3: "W" if s == 1 else f"W_{s}"}
        return axes

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "FrameGeometry":
        d = json.loads(text)
        return cls(int(d["multiple"]), int(d["min_size"]), tuple(int(s) for s in d["noise_scales"]))


class FrameNet(torch.nn.Module):
    """Base of the transform nets: ``forward`` pads by the net's ``geometry``, draws the noise planes when none are
    given, runs ``body`` (the part the compiled backends export) and crops back. Subclasses define ``geometry``
    and ``body`` only, so eager and compiled paths cannot disagree about padding or noise."""

    @property
    def geometry(self) -> FrameGeometry:  # pragma: no cover - interface
        raise NotImplementedError

    def body(self, x: torch.Tensor, noise: list[torch.Tensor] | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def noise_shapes(self, n: int, h: int, w: int) -> list[tuple[int, int, int, int]]:
        return self.geometry.noise_shapes(n, h, w)

    def make_noise(self, x: torch.Tensor, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Fresh standard-normal planes for ``x`` (N, 1, H, W); a seeded generator makes outputs reproducible."""
        n, _, h, w = x.shape
        return [torch.randn(s, generator=generator, device=x.device, dtype=x.dtype) for s in self.noise_shapes(n, h, w)]

    def forward(self, x: torch.Tensor, noise: list[torch.Tensor] | None = None) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.geometry.noise_scales and noise is None:
            noise = self.make_noise(x)
        return self.body(self.geometry.pad(x), noise or None)[..., :h, :w]


class BodyModule(torch.nn.Module):
    """``net.body`` with the noise planes as positional inputs: the signature exporters and compilers want
    (torch.export flattens ``*noise`` into one input per plane)."""

    def __init__(self, net: FrameNet):
        super().__init__()
        self.net = net

    def forward(self, frame, *noise):
        return self.net.body(frame, list(noise) if noise else None)




def echo_region(x: torch.Tensor, reach: int = 2) -> torch.Tensor:
    """1 where the input frame has echo within ``reach`` pixels, 0 elsewhere (outside the imaging sector). A net
    multiplies its output by this so injected noise never paints texture where the probe sees nothing — learning
    that suppression instead cost the pilot's models up to 20 % lit pixels outside the sector."""
    lit = (x > ECHO_LEVEL).to(x.dtype)
    return F.max_pool2d(lit, 2 * reach + 1, stride=1, padding=reach)
