"""The backends by name: how each loads a checkpoint and, for the compiled ones, builds its artifact.

``load_engine`` opens a model on a named backend (or ``auto``: the fastest one measured here); ``build_artifact``
is ``usnst engine build``. Adding a backend means writing its module (importing ``engines.base``, with a loader and,
if it compiles ahead of time, a builder) and one entry in ``BACKENDS``; nothing else names backends. Entries name
their code by module path, so a backend's packages (torch, onnxruntime, torch-tensorrt) load only when it is used.
"""
from __future__ import annotations

import binascii
import logging
import os
import time
from pathlib import Path

import numpy as np

from usnst.engines.base import Backend, BackendUnavailable, Engine, EngineOptions
from usnst.engines.checkpoint import CheckpointError, resolve_model

log = logging.getLogger(__name__)


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("torch", "usnst.engines.body_engine:load_torch"),
    Backend("onnxruntime", "usnst.engines.onnx_backend:load_onnx_engine", "usnst.engines.onnx_backend:build_onnx",
            "ONNX opset 17, fp32, dynamic frame size, noise as inputs", ".onnx", "usnst.engines.onnx_backend:load_onnx_artifact"),
    Backend("torch-compile", "usnst.engines.body_engine:load_torch_compile"),
    Backend("tensorrt", "usnst.engines.tensorrt_backend:load_tensorrt_engine", "usnst.engines.tensorrt_backend:build_tensorrt",
            "TensorRT ExportedProgram + .json record, noise as inputs", ".ep",
            "usnst.engines.tensorrt_backend:load_tensorrt_artifact"),
)}
AUTO = "auto"
DEFAULT_BACKEND = "torch"


def available_backends() -> list[str]:
    return list(BACKENDS)


def buildable_backends() -> list[str]:
    return [name for name, b in BACKENDS.items() if b.build_at]


def _backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {name!r}; available here: {', '.join(available_backends())}")
    return BACKENDS[name]


def artifact_backend(model: str | os.PathLike | None) -> str | None:
    """The backend whose engine artifact ``model`` is (by its suffix: .onnx, .ep), or None for a checkpoint/name."""
    suffix = Path(str(model)).suffix if model else ""
    return next((b.name for b in BACKENDS.values() if b.suffix and b.suffix == suffix), None)


def load_engine(model: str | os.PathLike | None = None, backend: str | None = None,
                options: EngineOptions = EngineOptions(), artifact: str | os.PathLike | None = None) -> Engine:
    """Open ``model`` — a checkpoint path, an embedded model name, None for the default, or an engine artifact
    (.onnx, .ep) — on ``backend`` (None: the artifact's own backend, else ``DEFAULT_BACKEND``); ``artifact`` is a
    prebuilt engine file for a checkpoint on a compiled backend (checked against the checkpoint)."""
    own = artifact_backend(model)
    if own is not None:
        if backend not in (None, AUTO, own):
            raise BackendUnavailable(f"{model} is a {own} engine artifact: it runs on --backend {own} (or give its "
                                     f"checkpoint to run on {backend})")
        if artifact:
            raise ValueError(f"--model {model} is already an engine artifact; --engine is for a checkpoint's artifact")
        if not Path(str(model)).is_file():
            raise FileNotFoundError(f"engine artifact {model} not found")
        return with_stages(_backend(own).load_artifact(str(model), options), artifact_stages(str(model)), options)
    path = resolve_model(model)
    backend = backend or DEFAULT_BACKEND
    if backend == AUTO:
        return with_stages(fastest_engine(str(path), options), checkpoint_stages(path), options)
    engine = _backend(backend).load(str(path), options, str(artifact) if artifact else None)
    return with_stages(engine, checkpoint_stages(path), options)


def checkpoint_stages(path: str | os.PathLike) -> dict:
    """The stages a checkpoint asks to run after its net (its metadata's ``beam_speckle`` and ``scanner_texture``),
    whatever the backend."""
    from usnst.engines.checkpoint import read_checkpoint, recorded_stages

    stages = recorded_stages(read_checkpoint(path).get("meta", {}))
    check_stages(stages, path)
    return stages


def check_stages(stages: dict, source: str | os.PathLike) -> None:
    """The stages a file records are refused in one line if they are not what a stage can be (a damaged or hand-made
    file must not allocate terabytes of noise planes)."""
    from usnst.engines.beam_speckle import META_KEY, BeamSpeckleConfig
    from usnst.engines.checkpoint import CheckpointError
    from usnst.engines.scanner_texture import META_KEY as TEXTURE_KEY
    from usnst.engines.scanner_texture import ScannerTextureConfig

    if stages.get(TEXTURE_KEY) and not stages.get(META_KEY):
        raise CheckpointError(f"{source}: a scanner texture without the beam-speckle stage that lays it along the beams")
    for key, kind, name in ((META_KEY, BeamSpeckleConfig, "beam-speckle stage"),
                            (TEXTURE_KEY, ScannerTextureConfig, "scanner texture")):
        settings = stages.get(key)
        if settings is None:
            continue
        try:
            if not isinstance(settings, dict):
                raise TypeError(f"its settings are a {type(settings).__name__}, not a map")
            kind.from_dict(settings)
        except (TypeError, ValueError, binascii.Error) as exc:
            raise CheckpointError(f"{source}: its {name} is invalid: {exc}") from None


def artifact_stages(artifact: str) -> dict:
    """The same for an engine artifact: recorded in an ONNX file's metadata, or its TensorRT record's checkpoint."""
    if artifact_backend(artifact) == "onnxruntime":
        from usnst.engines.onnx_backend import artifact_stages as onnx_stages

        stages = onnx_stages(artifact)
        check_stages(stages, artifact)
        return stages
    from usnst.engines.tensorrt_backend import read_sidecar

    record = read_sidecar(artifact)
    if "stages" in record:  # recorded at build, as an ONNX artifact records them
        check_stages(record["stages"], artifact)
        return record["stages"]
    checkpoint = record.get("checkpoint")  # records from before: the checkpoint's own
    return checkpoint_stages(checkpoint) if checkpoint and Path(checkpoint).is_file() else {}


def with_stages(engine: Engine, stages: dict, options: EngineOptions) -> Engine:
    """``engine`` followed by the stages its model records: beam speckle, its grain a scanner's texture if recorded."""
    from usnst.engines.beam_speckle import META_KEY, BeamSpeckleConfig, SpeckledEngine
    from usnst.engines.scanner_texture import META_KEY as TEXTURE_KEY
    from usnst.engines.scanner_texture import ScannerTextureConfig

    if stages.get(META_KEY):
        texture = stages.get(TEXTURE_KEY)
        return SpeckledEngine(engine, BeamSpeckleConfig.from_dict(stages[META_KEY]), options,
                              ScannerTextureConfig.from_dict(texture) if texture else None)
    return engine


def build_artifact(model: str | os.PathLike | None, backend: str, out: str | os.PathLike, precision: str | None = None,
                   shapes: str | None = None, device: str | None = None):
    """``usnst engine build``: the backend's own artifact for ``model``."""
    spec = _backend(backend)
    if spec.build_at is None:
        raise BackendUnavailable(f"the {backend} backend builds nothing ahead of time; "
                                 f"backends with artifacts: {', '.join(buildable_backends())}")
    return spec.build(resolve_model(model), out, precision, shapes, device)


def fastest_engine(path: str, options: EngineOptions = EngineOptions(), size: int = 256, runs: int = 3) -> Engine:
    """`--backend auto`: open every backend that works here, time ``runs`` inferences of a size×size frame after
    one warm-up, keep the fastest and log the figures, so the choice is measured on this machine, not assumed."""
    frame = np.zeros((size, size), np.float32)
    timings, engines = {}, {}
    for name, spec in BACKENDS.items():
        if name == "torch-compile" and not options.device.startswith("cuda"):
            continue  # compiling takes 15-45 s on CPU for about ONNX Runtime's speed: not worth it at startup
        try:
            engine = spec.load(path, options, None)
            engine.infer(frame)
            t0 = time.perf_counter()
            for _ in range(runs):
                engine.infer(frame)
            timings[name] = (time.perf_counter() - t0) / runs * 1e3
            engines[name] = engine
        except (CheckpointError, FileNotFoundError):  # the model's fault, not the backend's: every backend would fail
            raise
        except Exception as exc:  # a backend that cannot run here is skipped, with its reason
            log.info("backend auto: %s unavailable: %s", name, exc)
    if not engines:
        raise BackendUnavailable("no backend could run this model")
    best = min(timings, key=timings.get)
    log.info("backend auto → %s (%s ms per %dx%d frame)", best,
             ", ".join(f"{k} {v:.1f}" for k, v in sorted(timings.items(), key=lambda kv: kv[1])), size, size)
    return engines[best]
