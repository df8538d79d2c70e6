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

NOISE_MODES = ("frame", "fixed", "off")


class NoisePlanes:
    """The noise planes of one engine, by mode: ``frame`` draws fresh planes for every frame (speckle 'boils' at
    video rates), ``fixed`` draws them once per frame size and reuses them (a static input gives a static output:
    the streaming default), ``off`` feeds zeros. ``draw(shapes)`` and ``zeros(shapes)`` come from the backend
    (torch generator on the device, or numpy), so every backend keeps its own reproducible stream."""

    def __init__(self, mode: str, draw: Callable, zeros: Callable):
        if mode not in NOISE_MODES:
            raise ValueError(f"noise mode must be one of {NOISE_MODES}, got {mode!r}")
        self.mode, self._draw, self._zeros = mode, draw, zeros
        self._fixed: dict[tuple, list] = {}

    def planes(self, shapes: list[tuple[int, ...]]) -> list:
        if not shapes:
            return []
        if self.mode == "off":
            return self._zeros(shapes)
        if self.mode == "frame":
            return self._draw(shapes)
        key = tuple(map(tuple, shapes))
        if key not in self._fixed:
            self._fixed = {key: self._draw(shapes)}  # one size at a time: a new size replaces the old planes
        return self._fixed[key]


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says why (never replaced silently)."""


class EngineMismatch(RuntimeError):
    """An engine artifact that does not belong to this checkpoint, precision or device, or was modified."""


@dataclass(frozen=True)
class EngineOptions:
    """How to run a net: which noise, which seed, how many CPU threads, on which device and precision."""

    noise: str = "frame"  # "frame": fresh every frame; "fixed": drawn once per frame size; "off": zeros
    seed: int = 0
    threads: int | None = None  # torch intra-op threads; None leaves torch's default
    device: str = "cpu"  # "cpu" or "cuda[:N]"; compiled GPU backends (tensorrt) need cuda
    precision: str = "fp32"  # "fp32" or "fp16" (GPU backends; normalisation layers stay fp32)


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
        if options.threads:
            torch.set_num_threads(options.threads)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.options = options
        self.source = source or {}
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(options.seed)
        dtype = next(self.model.parameters()).dtype
        self.noise = NoisePlanes(
            options.noise,
            lambda shapes: [torch.randn(s, generator=self.generator, device=self.device, dtype=dtype) for s in shapes],
            lambda shapes: [torch.zeros(s, device=self.device, dtype=dtype) for s in shapes])

    def _noise(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.noise.planes(self.model.noise_shapes(*x.shape[:1], *x.shape[-2:]))

    def infer(self, frame: np.ndarray) -> np.ndarray:
        if frame.ndim != 2:
            raise ValueError(f"engine expects a 2-D grayscale frame, got shape {frame.shape}")
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(frame, dtype=np.float32)).to(self.device)[None, None]
            x = x.to(next(self.model.parameters()).dtype)
            y = self.model(x, self._noise(x)).clamp_(0.0, 1.0)
            return y[0, 0].float().cpu().numpy()

    def describe(self) -> dict:
        return {"backend": self.name, "device": str(self.device), "noise": self.options.noise,
                "seed": self.options.seed, **self.source}


def check_device(options: EngineOptions) -> None:
    """Refuse, with the reason, a device or precision this machine cannot give (never fall back silently)."""
    if options.precision not in ("fp32", "fp16"):
        raise ValueError(f"precision must be fp32 or fp16, got {options.precision!r}")
    if options.device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailable(f"device {options.device}: this PyTorch build sees no CUDA GPU "
                                 f"(torch {torch.__version__}, CUDA {torch.version.cuda or 'not compiled in'})")
    if options.precision == "fp16" and not options.device.startswith("cuda"):
        raise BackendUnavailable("fp16 inference is for GPUs; on CPU use fp32")


def _checkpoint_source(path: str, meta: dict) -> dict:
    return {"checkpoint": os.fspath(path), "checkpoint_sha256": file_sha256(path), "task": meta.get("task")}


def _torch_factory(path: str, options: EngineOptions, artifact: str | None = None) -> Engine:
    if artifact:
        raise BackendUnavailable("the torch backend runs checkpoints directly; --engine artifacts are for compiled backends")
    check_device(options)
    model, meta = load_checkpoint(path)
    if options.precision == "fp16":
        model = model.half()
    return TorchEagerEngine(model, options, device=options.device, source=_checkpoint_source(path, meta))


def _torch_compile_factory(path: str, options: EngineOptions, artifact: str | None = None) -> Engine:
    """torch.compile (inductor) of the network body; on CUDA with CUDA graphs ("reduce-overhead"), which
    removes per-kernel launch cost for the fixed frame size of a stream. Each new frame size compiles once
    (seconds to tens of seconds), which is why the node warms up before it subscribes."""
    if artifact:
        raise BackendUnavailable("torch-compile compiles in process; it has no --engine artifact")
    check_device(options)
    from engines.body_engine import BodyEngine, BodyModule

    model, meta = load_checkpoint(path)
    dtype = torch.float16 if options.precision == "fp16" else torch.float32
    body = BodyModule(model).eval().to(options.device, dtype)
    mode = "reduce-overhead" if options.device.startswith("cuda") else None
    compiled = torch.compile(body, mode=mode, dynamic=False)
    return BodyEngine("torch-compile", model, compiled, options, options.device, dtype,
                      {"compile_mode": mode or "default", **_checkpoint_source(path, meta)})


def _onnxruntime_factory(path: str, options: EngineOptions, artifact: str | None = None) -> Engine:
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailable(f"onnxruntime backend: onnxruntime is not installed ({exc})") from exc
    from engines.onnx_backend import load_onnx_engine

    return load_onnx_engine(path, options, artifact)


def _tensorrt_factory(path: str, options: EngineOptions, artifact: str | None = None) -> Engine:
    from engines.tensorrt_backend import load_tensorrt_engine

    return load_tensorrt_engine(path, options, artifact)


# name → factory(checkpoint path, options, engine artifact or None).
_BACKENDS: dict[str, Callable[..., Engine]] = {"torch": _torch_factory, "onnxruntime": _onnxruntime_factory,
                                               "torch-compile": _torch_compile_factory, "tensorrt": _tensorrt_factory}


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
        if name == "torch-compile" and not options.device.startswith("cuda"):
            continue  # compiling takes 15-45 s on CPU for about ONNX Runtime's speed: not worth it at startup
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
