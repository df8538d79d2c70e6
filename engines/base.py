"""What every inference backend shares: the ``Engine`` interface, the options that say how to run a net, the noise
planes fed to it, and the errors a backend raises. Backends import this module; it imports none of them.

Every backend turns one grayscale frame, float32 (H, W) in [0, 1], into the stylized frame of the same shape and
range. The node and batch tools only see ``Engine.infer``; converting the wire dtype to and from float is the
caller's concern (usnst_stream.frames), so a backend never knows about the protocol.
"""
from __future__ import annotations

import hashlib
import importlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from usnst.engines.checkpoint import file_sha256

if TYPE_CHECKING:  # torch is imported where a net runs, so the command line starts without it
    import torch

NOISE_MODES = ("fixed", "frame", "off")
PRECISIONS = ("fp32", "fp16")


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says why (never replaced silently)."""


class EngineMismatch(RuntimeError):
    """An engine artifact that does not belong to this checkpoint, precision or device, or was modified."""


@dataclass(frozen=True)
class EngineOptions:
    """How to run a net: which noise, which seed, how many CPU threads, on which device and precision."""

    noise: str = "fixed"  # "fixed": drawn once per frame size, so a still scene stays still; "frame": fresh every
    # frame (speckle 'boils' at video rates); "off": zeros
    seed: int = 0  # seed of the injected noise (reproducible outputs)
    threads: int | None = None  # CPU threads for inference; None leaves the runtime's default
    spin: bool = False  # ONNX Runtime: let idle inference threads spin-wait (see onnx_backend.OnnxRuntimeEngine)
    device: str = "cpu"  # "cpu" or "cuda[:N]"; compiled GPU backends (tensorrt) need cuda
    precision: str = "fp32"  # "fp32" or "fp16" (GPU backends; normalisation layers stay fp32)
    artifact_key: str | None = None  # file of the key engine artifacts are signed with: unsigned ones are refused


class NoisePlanes:
    """The noise planes of one engine, by mode: ``frame`` draws fresh planes for every frame, ``fixed`` draws them
    once per frame size and reuses them, ``off`` feeds zeros.

    Planes are standard normal from a torch generator seeded with ``options.seed`` on ``device``; ``as_numpy``
    hands them to runtimes that take numpy arrays. On the CPU every backend therefore draws the same planes for the
    same seed, and gives the same output."""

    def __init__(self, options: EngineOptions, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                 as_numpy: bool = False):
        import torch

        if options.noise not in NOISE_MODES:
            raise ValueError(f"noise mode must be one of {NOISE_MODES}, got {options.noise!r}")
        self.mode = options.noise
        self.device, self.dtype, self.as_numpy = torch.device(device), dtype or torch.float32, as_numpy
        self.seed = options.seed
        self.generator = torch.Generator(device=self.device)
        self.reset()

    def reset(self, key: str | None = None) -> None:
        """Back to the state of a new stream: the next planes are those the seed gives first. ``key`` names the
        stream (a batch file's content hash): its planes come from (seed, key), so unrelated images of a dataset
        carry independent grain — one grain for all would correlate their textures — and a file always its own."""
        self.stream_seed = self.seed if key is None else int.from_bytes(
            hashlib.sha256(f"{self.seed}:{key}".encode()).digest()[:7], "big")
        self.generator.manual_seed(self.stream_seed)
        self._fixed: dict[tuple, list] = {}

    def _make(self, shapes, draw: bool) -> list:
        import torch

        make = (lambda s: torch.randn(s, generator=self.generator, device=self.device, dtype=self.dtype)) if draw \
            else (lambda s: torch.zeros(s, device=self.device, dtype=self.dtype))
        planes = [make(s) for s in shapes]
        return [p.numpy() for p in planes] if self.as_numpy else planes

    def planes(self, shapes: list[tuple[int, ...]]) -> list:
        if not shapes:
            return []
        if self.mode != "fixed":
            return self._make(shapes, draw=self.mode == "frame")
        key = tuple(map(tuple, shapes))
        if key not in self._fixed:
            # Drawn from the seed afresh, so a size's planes depend on (seed, size) only — not on which sizes came
            # before (a node's warm-up frame, an earlier stream): the node and the in-process API agree.
            self.generator.manual_seed(self.stream_seed)
            self._fixed = {key: self._make(shapes, draw=True)}  # one size at a time: a new size replaces the old
        return self._fixed[key]


class Engine:
    """A loaded network ready to stylize frames."""

    name = "abstract"

    def infer(self, frame: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def infer_at(self, frame: np.ndarray, pose: np.ndarray | None,
                 spacing_mm: tuple[float, float] | None = None) -> np.ndarray:
        """A frame with the probe pose its sender gave (4×4 image-to-world, ``usnst_io.protocol.image_to_world``)
        or None, and its pixel spacing when it gave one without a pose (``protocol.spacing_mm``). An engine whose
        output depends on where the tissue is (the beam-speckle stage's anchored grain) places its grain by the pose,
        and one that forms a scanner's grain sizes it in mm by either; for the others the output is a function of the
        frame alone."""
        return self.infer(frame)

    def describe(self) -> dict:
        return {"backend": self.name}

    def reset(self, key: str | None = None) -> None:
        """Forget what earlier frames left behind (noise drawn, a fitted fan): the next frame is the first of a new
        stream. Batch tools call it before each file with the file's ``key``, so a file's output never depends on
        the files before it and unrelated files do not share one grain (NoisePlanes.reset)."""
        noise = getattr(self, "noise", None)
        if isinstance(noise, NoisePlanes):
            noise.reset(key)


def sizes_grain_in_mm(engine: Engine) -> bool:
    """Whether a pixel spacing changes ``engine``'s output: a formed grain whose width the stage keeps in mm. A tool's
    option that gives a spacing for such a grain alone is refused for the others: it would change nothing."""
    described = engine.describe()
    return (described.get("beam_speckle") or {}).get("sample_mm", 0) > 0 and "scanner_texture" not in described


def check_frame(frame: np.ndarray) -> None:
    """A frame an engine takes: 2-D, floating point (grey 0–1). An integer frame would read as hundreds of times too
    bright and come back white, so it is refused with the way out."""
    if frame.ndim != 2:
        raise ValueError(f"engine expects a 2-D grayscale frame, got shape {frame.shape}")
    if not np.issubdtype(frame.dtype, np.floating):
        raise ValueError(f"engine expects a float frame with grey in [0, 1], got {frame.dtype}: divide by the "
                         "dtype's maximum (usnst_io.media.to_float), or use usnst.Stylizer, which takes uint8 and uint16")


def check_device(options: EngineOptions) -> None:
    """Refuse, with the reason, a device or precision this machine cannot give (never fall back silently)."""
    import torch

    if options.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {options.precision!r}")
    if options.device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailable(f"device {options.device}: this PyTorch build sees no CUDA GPU "
                                 f"(torch {torch.__version__}, CUDA {torch.version.cuda or 'not compiled in'})")
    if options.precision == "fp16" and not options.device.startswith("cuda"):
        raise BackendUnavailable("fp16 inference is for GPUs; on CPU use fp32")


def checkpoint_source(path: str | os.PathLike, meta: dict) -> dict:
    """What ``describe()`` says about the checkpoint an engine runs."""
    return {"checkpoint": os.fspath(path), "checkpoint_sha256": file_sha256(path), "task": meta.get("task")}


@dataclass(frozen=True)
class Backend:
    """A registered backend, named by where its code lives (``module:function``) so that a backend and the packages
    it needs are imported only when it is used. ``load(checkpoint, options, artifact)`` → Engine; ``build(checkpoint,
    out, precision, shapes, device)`` → artifact path, for backends that compile ahead of time (None for in-process
    ones); ``builds`` says what their artifact is."""

    name: str
    load_at: str
    build_at: str | None = None
    builds: str = ""
    suffix: str = ""  # file suffix of its artifact (`--model m.onnx` runs on the backend whose artifact it is)
    artifact_at: str | None = None  # loader of an artifact alone: (artifact, options) → Engine

    @staticmethod
    def _resolve(where: str) -> Callable:
        module, function = where.split(":")
        return getattr(importlib.import_module(module), function)

    def load(self, checkpoint: str, options: EngineOptions, artifact: str | None = None) -> Engine:
        return self._resolve(self.load_at)(checkpoint, options, artifact)

    def load_artifact(self, artifact: str, options: EngineOptions) -> Engine:
        if self.artifact_at is None:
            raise BackendUnavailable(f"the {self.name} backend has no artifacts to load")
        return self._resolve(self.artifact_at)(artifact, options)

    def build(self, checkpoint, out, precision: str | None = None, shapes: str | None = None, device: str | None = None):
        if self.build_at is None:
            raise BackendUnavailable(f"the {self.name} backend builds nothing ahead of time")
        return self._resolve(self.build_at)(checkpoint, out, precision, shapes, device)
