"""The engine shared by the compiled backends (torch.compile, TensorRT): a compiled *body* wrapped in the
padding, noise and cropping that ``TransformerNet.forward`` does in eager mode.

Compiled graphs see only the network body on a frame padded to the net's multiple, with the noise planes as
inputs (TensorRT and ONNX freeze in-graph random ops at build time). On CUDA the host side uses pinned
buffers and non-blocking copies, so the upload, the kernels and the download queue on one stream and the
only synchronisation is the one that hands the result back to the caller.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F

from engines.backends import Engine, EngineOptions, NoisePlanes


class BodyModule(torch.nn.Module):
    """``net.body`` with the noise planes as positional inputs: the signature exporters and compilers want."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, frame, *noise):
        return self.net.body(frame, list(noise) if noise else None)


def pad_multiple(net: torch.nn.Module) -> int:
    """Compiled bodies need frame sizes divisible by this: the Johnson net's two stride-2 convs (4), the fast
    net's space-to-depth factor."""
    return getattr(net.config, "factor", 4)


class _Staging:
    """Reused host buffers for one frame shape; pinned (page-locked) on CUDA so copies can be asynchronous."""

    def __init__(self, shape: tuple[int, int], pinned: bool):
        self.shape = shape
        self.upload = torch.empty(shape, dtype=torch.float32, pin_memory=pinned)
        self.download = torch.empty(shape, dtype=torch.float32, pin_memory=pinned)


class BodyEngine(Engine):
    """Runs ``body(padded_frame, *noise)`` on ``device`` in ``dtype``; ``net`` supplies the geometry
    (padded size, pad mode, noise shapes) so padding and noise match eager PyTorch exactly."""

    def __init__(self, name: str, net: torch.nn.Module, body: Callable, options: EngineOptions = EngineOptions(),
                 device: str = "cpu", dtype: torch.dtype = torch.float32, source: dict | None = None):
        self.name = name
        self.net = net
        self.body = body
        self.options = options
        self.device = torch.device(device)
        self.dtype = dtype
        self.source = source or {}
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(options.seed)
        self.noise = NoisePlanes(
            options.noise,
            lambda shapes: [torch.randn(s, generator=self.generator, device=self.device, dtype=dtype) for s in shapes],
            lambda shapes: [torch.zeros(s, device=self.device, dtype=dtype) for s in shapes])
        self._staging: _Staging | None = None

    def _stage(self, shape: tuple[int, int]) -> _Staging:
        if self._staging is None or self._staging.shape != shape:
            self._staging = _Staging(shape, pinned=self.device.type == "cuda")
        return self._staging

    def infer(self, frame: np.ndarray) -> np.ndarray:
        if frame.ndim != 2:
            raise ValueError(f"engine expects a 2-D grayscale frame, got shape {frame.shape}")
        h, w = frame.shape
        staging = self._stage((h, w))
        staging.upload.numpy()[...] = frame
        with torch.inference_mode():
            x = staging.upload.to(self.device, non_blocking=True).to(self.dtype)[None, None]
            ph, pw = self.net.padded_size(h, w)
            if (ph, pw) != (h, w):
                x = F.pad(x, (0, pw - w, 0, ph - h), mode=self.net.pad_mode(h, w))
            noise = self.noise.planes(self.net.noise_shapes(1, ph, pw))
            y = self.body(x, *noise)[0, 0, :h, :w].clamp(0.0, 1.0).float()
            staging.download.copy_(y, non_blocking=True)
            if self.device.type == "cuda":
                torch.cuda.current_stream(self.device).synchronize()
        return staging.download.numpy().copy()

    def describe(self) -> dict:
        return {"backend": self.name, "device": str(self.device), "precision": str(self.dtype).removeprefix("torch."),
                "noise": self.options.noise, "seed": self.options.seed, **self.source}
