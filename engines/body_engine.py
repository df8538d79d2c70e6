"""The PyTorch engines: eager (the reference every other backend is compared with) and torch.compile, plus the
engine TensorRT reuses. All run the network *body* on a frame padded by the net's ``geometry``, with the noise
planes as inputs, and crop the result — exactly what ``FrameNet.forward`` does in eager mode.

Compiled graphs see only the body (TensorRT and ONNX freeze in-graph random ops at build time, so noise is an
input). On CUDA the host side uses pinned buffers and non-blocking copies, so the upload, the kernels and the
download queue on one stream and the only synchronisation is the one that hands the result back to the caller.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from usnst.engines.base import (
    BackendUnavailable,
    Engine,
    EngineOptions,
    NoisePlanes,
    check_device,
    check_frame,
    checkpoint_source,
)
from usnst.engines.checkpoint import load_checkpoint
from usnst.engines.geometry import BodyModule, FrameNet


class _Staging:
    """Reused host buffers for one frame shape; pinned (page-locked) on CUDA so copies can be asynchronous."""

    def __init__(self, shape: tuple[int, int], pinned: bool):
        self.shape = shape
        self.upload = torch.empty(shape, dtype=torch.float32, pin_memory=pinned)
        self.download = torch.empty(shape, dtype=torch.float32, pin_memory=pinned)


class BodyEngine(Engine):
    """Runs ``body(padded_frame, *noise)`` on ``device`` in ``dtype``; ``net.geometry`` gives the padding and the
    noise shapes, so they match eager PyTorch exactly."""

    def __init__(self, name: str, net: FrameNet, body: Callable, options: EngineOptions = EngineOptions(),
                 device: str = "cpu", dtype: torch.dtype = torch.float32, source: dict | None = None):
        if options.threads and not str(device).startswith("cuda"):
            torch.set_num_threads(options.threads)
        self.name = name
        self.net = net
        self.geometry = net.geometry
        self.body = body
        self.options = options
        self.device = torch.device(device)
        self.dtype = dtype
        self.source = source or {}
        self.noise = NoisePlanes(options, self.device, dtype)
        self._staging: _Staging | None = None

    def _stage(self, shape: tuple[int, int]) -> _Staging:
        if self._staging is None or self._staging.shape != shape:
            self._staging = _Staging(shape, pinned=self.device.type == "cuda")
        return self._staging

    def infer(self, frame: np.ndarray) -> np.ndarray:
        check_frame(frame)
        h, w = frame.shape
        staging = self._stage((h, w))
        staging.upload.numpy()[...] = frame
        with torch.inference_mode():
            x = staging.upload.to(self.device, non_blocking=True).to(self.dtype)[None, None]
            noise = self.noise.planes(self.geometry.noise_shapes(1, h, w))
            y = self.body(self.geometry.pad(x), *noise)[0, 0, :h, :w].clamp(0.0, 1.0).float()
            staging.download.copy_(y, non_blocking=True)
            if self.device.type == "cuda":
                torch.cuda.current_stream(self.device).synchronize()
        return staging.download.numpy().copy()

    def describe(self) -> dict:
        return {"backend": self.name, "device": str(self.device), "precision": str(self.dtype).removeprefix("torch."),
                "noise": self.options.noise, "seed": self.options.seed, **self.source}


class TorchEagerEngine(BodyEngine):
    """PyTorch eager on CPU (or CUDA when asked): the reference every other backend is compared with."""

    def __init__(self, model: FrameNet, options: EngineOptions = EngineOptions(), device: str = "cpu",
                 source: dict | None = None):
        model = model.to(device).eval()
        dtype = next(model.parameters()).dtype
        super().__init__("torch", model, BodyModule(model), options, device, dtype, source)
        self.model = model


def load_torch(path: str, options: EngineOptions, artifact: str | None = None) -> Engine:
    if artifact:
        raise BackendUnavailable("the torch backend runs checkpoints directly; --engine artifacts are for compiled backends")
    check_device(options)
    model, meta = load_checkpoint(path)
    if options.precision == "fp16":
        model = model.half()
    return TorchEagerEngine(model, options, device=options.device, source=checkpoint_source(path, meta))


def load_torch_compile(path: str, options: EngineOptions, artifact: str | None = None) -> Engine:
    """torch.compile (inductor) of the network body; on CUDA with CUDA graphs ("reduce-overhead"), which
    removes per-kernel launch cost for the fixed frame size of a stream. Each new frame size compiles once
    (seconds to tens of seconds), which is why the node warms up before it subscribes."""
    if artifact:
        raise BackendUnavailable("torch-compile compiles in process; it has no --engine artifact")
    check_device(options)
    model, meta = load_checkpoint(path)
    dtype = torch.float16 if options.precision == "fp16" else torch.float32
    body = BodyModule(model).eval().to(options.device, dtype)
    mode = "reduce-overhead" if options.device.startswith("cuda") else None
    compiled = torch.compile(body, mode=mode, dynamic=False)
    return BodyEngine("torch-compile", model, compiled, options, options.device, dtype,
                      {"compile_mode": mode or "default", **checkpoint_source(path, meta)})
