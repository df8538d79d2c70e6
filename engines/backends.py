"""Inference backends behind one small interface.

Every backend turns one grayscale frame, float32 (H, W) in [0, 1], into the stylized frame of the same
shape and range. The node and batch tools only see ``Engine.infer``; converting the wire dtype to and
from float is the caller's concern (usnst_stream.frames), so a backend never knows about the protocol.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from engines.checkpoint import file_sha256, load_checkpoint, resolve_model

log = logging.getLogger(__name__)

NOISE_MODES = ("frame", "off")


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says why (never replaced silently)."""


@dataclass(frozen=True)
class EngineOptions:
    """How to run a net: which noise, which seed, how many CPU threads."""

    noise: str = "frame"  # "frame": fresh noise every frame; "off": noise planes are zero
    seed: int = 0
    threads: int | None = None  # torch intra-op threads; None leaves torch's default


class Engine:
    """A loaded network ready to stylize frames."""

    name = "abstract"

    def infer(self, frame: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> dict:
        return {"backend": self.name}


class TorchEagerEngine(Engine):
    """PyTorch eager on CPU (or CUDA when asked): the reference every other backend is compared with."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, options: EngineOptions = EngineOptions(), device: str = "cpu",
                 source: dict | None = None):
        if options.noise not in NOISE_MODES:
            raise ValueError(f"noise mode must be one of {NOISE_MODES}, got {options.noise!r}")
        if options.threads:
            torch.set_num_threads(options.threads)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.options = options
        self.source = source or {}
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(options.seed)

    def _noise(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.options.noise == "off":
            return [torch.zeros(s, device=x.device) for s in self.model.noise_shapes(*x.shape[:1], *x.shape[-2:])]
        return self.model.make_noise(x, self.generator)

    def infer(self, frame: np.ndarray) -> np.ndarray:
        if frame.ndim != 2:
            raise ValueError(f"engine expects a 2-D grayscale frame, got shape {frame.shape}")
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(frame, dtype=np.float32)).to(self.device)[None, None]
            y = self.model(x, self._noise(x)).clamp_(0.0, 1.0)
            return y[0, 0].cpu().numpy()

    def describe(self) -> dict:
        return {"backend": self.name, "device": str(self.device), "noise": self.options.noise,
                "seed": self.options.seed, **self.source}


def _torch_factory(path: str, options: EngineOptions, artifact: str | None = None) -> Engine:
    if artifact:
        raise BackendUnavailable("the torch backend runs checkpoints directly; --engine artifacts are for compiled backends")
    model, meta = load_checkpoint(path)
    source = {"checkpoint": os.fspath(path), "checkpoint_sha256": file_sha256(path), "task": meta.get("task")}
    return TorchEagerEngine(model, options, source=source)


def _onnxruntime_factory(path: str, options: EngineOptions, artifact: str | None = None) -> Engine:
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailable(f"onnxruntime backend: onnxruntime is not installed ({exc})") from exc
    from engines.onnx_backend import load_onnx_engine

    return load_onnx_engine(path, options, artifact)


# name → factory(checkpoint path, options, engine artifact or None). TensorRT registers here with the engines issue.
_BACKENDS: dict[str, Callable[..., Engine]] = {"torch": _torch_factory, "onnxruntime": _onnxruntime_factory}


def available_backends() -> list[str]:
    return list(_BACKENDS)


def load_engine(model: str | os.PathLike | None = None, backend: str = "torch",
                options: EngineOptions = EngineOptions(), artifact: str | os.PathLike | None = None) -> Engine:
    """Open ``model`` (a checkpoint path, an embedded model name, or None for the default) on ``backend``;
    ``artifact`` is a prebuilt engine file for compiled backends (checked against the checkpoint)."""
    path = resolve_model(model)
    if backend == "auto":
        return fastest_engine(str(path), options)
    if backend not in _BACKENDS:
        raise BackendUnavailable(f"unknown backend {backend!r}; available here: {', '.join(available_backends())}")
    return _BACKENDS[backend](str(path), options, str(artifact) if artifact else None)


def fastest_engine(path: str, options: EngineOptions = EngineOptions(), size: int = 256, runs: int = 3) -> Engine:
    """`--backend auto`: open every backend that works here, time ``runs`` inferences of a size×size frame after
    one warm-up, keep the fastest and log the figures, so the choice is measured on this machine, not assumed."""
    import time

    frame = np.zeros((size, size), np.float32)
    timings, engines = {}, {}
    for name, factory in _BACKENDS.items():
        try:
            engine = factory(path, options, None)
            engine.infer(frame)
            t0 = time.perf_counter()
            for _ in range(runs):
                engine.infer(frame)
            timings[name] = (time.perf_counter() - t0) / runs * 1e3
            engines[name] = engine
        except Exception as exc:  # a backend that cannot run here is skipped, with its reason
            log.info("backend auto: %s unavailable: %s", name, exc)
    if not engines:
        raise BackendUnavailable("no backend could run this model")
    best = min(timings, key=timings.get)
    log.info("backend auto → %s (%s ms per %dx%d frame)", best,
             ", ".join(f"{k} {v:.1f}" for k, v in sorted(timings.items(), key=lambda kv: kv[1])), size, size)
    return engines[best]
