"""ONNX export of the transform net and the ONNX Runtime backend.

The exported graph is the network body on a padded frame (``FrameNet.body``), with dynamic height and width and
the noise planes as graph *inputs* (random ops would be frozen at export). Padding, noise generation and cropping
happen here, around the session, from the net's ``FrameGeometry``, which the artifact records in its metadata
together with what it was built from (checkpoint SHA-256, precision, usnst version); loading refuses an artifact
built from another checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from engines.base import (
    BackendUnavailable,
    Engine,
    EngineMismatch,
    EngineOptions,
    NoisePlanes,
    check_frame,
)
from engines.checkpoint import code_version, file_sha256, load_checkpoint
from engines.geometry import BodyModule, FrameGeometry, FrameNet
from usnst_io.media import atomic_path

log = logging.getLogger(__name__)

OPSET = 17
META_SHA = "usnst.checkpoint_sha256"
META_GRAPH = "usnst.graph_sha256"  # of the serialized graph (nodes + weights): detects an edited artifact
META_GEOMETRY = "usnst.geometry"  # the net's FrameGeometry as JSON: padding and noise planes
META_STAGES = "usnst.stages"  # what runs after the net, as the checkpoint records it (beam speckle), as JSON


def export_onnx(checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Export a checkpoint (any architecture) to ONNX (fp32, dynamic H×W); written atomically."""
    from engines.beam_speckle import META_KEY

    net, meta = load_checkpoint(checkpoint)
    stages = {META_KEY: meta[META_KEY]} if meta.get(META_KEY) else {}
    return export_net(net, out, {META_SHA: file_sha256(checkpoint), "usnst.task": str(meta.get("task")),
                                 META_STAGES: json.dumps(stages)})


def export_net(net: FrameNet, out: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Export ``net``'s body to ONNX: inputs ``frame`` and the geometry's noise planes, dynamic sizes from the
    geometry, which is recorded in the metadata for the runtime to pad, draw noise and crop by."""
    import onnx

    geometry = net.geometry
    h, w = geometry.padded_size(64, 80)
    frame = torch.rand(1, 1, h, w)
    noise = [torch.randn(s) for s in geometry.noise_shapes(1, h, w)]
    out = Path(out)
    with atomic_path(out) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and shape-inference chatter
            torch.onnx.export(BodyModule(net).eval(), (frame, *noise), str(tmp),
                              input_names=["frame", *geometry.noise_names], output_names=["styled"],
                              dynamic_axes=geometry.onnx_axes(), opset_version=OPSET, dynamo=False)
        model = onnx.load(str(tmp))
        for key, value in {META_GRAPH: graph_sha256(model), "usnst.backend": "onnxruntime", "usnst.precision": "fp32",
                           META_GEOMETRY: geometry.to_json(), "usnst.version": code_version(),
                           **(metadata or {})}.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(model, str(tmp))
    return out


def graph_sha256(model) -> str:
    return hashlib.sha256(model.graph.SerializeToString()).hexdigest()


def artifact_checkpoint_sha(path: str | os.PathLike) -> str | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((p.value for p in model.metadata_props if p.key == META_SHA), None)


def artifact_stages(path: str | os.PathLike) -> dict:
    """The stages an artifact's checkpoint runs after its net (empty for exports that record none)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return json.loads(next((p.value for p in model.metadata_props if p.key == META_STAGES), "{}"))


def check_artifact(path: str | os.PathLike, checkpoint: str | os.PathLike) -> None:
    """Refuse an artifact built from another checkpoint, or whose graph was changed after it was built."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    sha = file_sha256(checkpoint)
    rebuild = f"rebuild it with `usnst engine build --model {checkpoint}`"
    if meta.get(META_SHA) != sha:
        raise EngineMismatch(f"{path} was built from checkpoint {str(meta.get(META_SHA))[:12]}…, not from {checkpoint} "
                             f"({sha[:12]}…): {rebuild}")
    if META_GEOMETRY not in meta:
        raise EngineMismatch(f"{path} records no frame geometry (built by an older usnst): {rebuild}")
    if meta.get(META_GRAPH) != graph_sha256(model):
        raise EngineMismatch(f"{path}: its graph differs from the one exported (modified or corrupted): {rebuild}")


def load_onnx_artifact(artifact: str, options: EngineOptions) -> OnnxRuntimeEngine:
    """An ONNX artifact on its own (`--model m.onnx`): padding and noise from the geometry it records, provenance
    (checkpoint hash, task) from its metadata. An artifact whose graph was changed after export is refused."""
    import onnx

    model = onnx.load(str(artifact), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    if META_GRAPH not in meta or meta[META_GRAPH] != graph_sha256(model):
        raise EngineMismatch(f"{artifact}: not a usnst ONNX export, or its graph was changed after export "
                             "(rebuild it with `usnst engine build`)")
    return OnnxRuntimeEngine(artifact, options, {"checkpoint_sha256": meta.get(META_SHA),
                                                 "task": meta.get("usnst.task")})


def default_artifact_path(sha: str) -> Path:
    root = Path(os.environ.get("USNST_CACHE", Path.home() / ".cache" / "usnst")) / "engines"
    return root / f"{sha[:16]}-fp32.onnx"


def providers() -> list[str]:
    """CUDA and TensorRT execution providers when this onnxruntime build has them, CPU always."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available] + ["CPUExecutionProvider"]


class OnnxRuntimeEngine(Engine):
    """An ONNX Runtime session over an exported body; padding, noise and cropping by the geometry the artifact
    records (noise drawn by the same seeded torch generator as the PyTorch engines, so outputs agree).

    Its threads do not spin-wait unless ``options.spin``: ONNX Runtime's threads spin after each op and each frame,
    so at 30 frames/s a 512² stream burned 45–50 ms of CPU per frame for 14–17 ms of inference (33 ms without
    spinning, for 16–18 ms) — CPU a simulator on the same machine needs, and two sessions timed side by side ran
    2.3× slower each. Spinning gains ~1–2 ms when the node has the cores to itself."""

    name = "onnxruntime"

    def __init__(self, artifact: str | os.PathLike, options: EngineOptions = EngineOptions(), source: dict | None = None):
        import onnxruntime as ort

        so = ort.SessionOptions()
        if options.threads:
            so.intra_op_num_threads = options.threads
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if options.spin else "0")
        self.session = ort.InferenceSession(str(artifact), so, providers=providers())
        meta = self.session.get_modelmeta().custom_metadata_map
        if META_GEOMETRY not in meta:
            raise EngineMismatch(f"{artifact} records no frame geometry: rebuild it with `usnst engine build`")
        self.geometry = FrameGeometry.from_json(meta[META_GEOMETRY])
        self.options = options
        self.noise = NoisePlanes(options, as_numpy=True)
        self.source = {"artifact": str(artifact), **(source or {})}

    def infer(self, frame: np.ndarray) -> np.ndarray:
        check_frame(frame)
        h, w = frame.shape
        feeds = {"frame": self.geometry.pad_numpy(np.asarray(frame, np.float32))[None, None]}
        feeds.update(zip(self.geometry.noise_names, self.noise.planes(self.geometry.noise_shapes(1, h, w))))
        y = self.session.run(None, feeds)[0][0, 0, :h, :w]
        return np.clip(y, 0.0, 1.0)

    def describe(self) -> dict:
        return {"backend": self.name, "providers": self.session.get_providers(), "noise": self.options.noise,
                "seed": self.options.seed, "spin": self.options.spin, **self.source}


def load_onnx_engine(checkpoint: str, options: EngineOptions, artifact: str | None = None) -> OnnxRuntimeEngine:
    """The ONNX Runtime engine for ``checkpoint`` (``Backend.load``): from ``artifact`` if given (refused if built
    from another checkpoint or edited), else from the cache, exported there the first time and again if the cached file fails
    its check (the cache is usnst's own)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailable(f"onnxruntime backend: onnxruntime is not installed ({exc})") from exc
    sha = file_sha256(checkpoint)
    path = Path(artifact) if artifact else default_artifact_path(sha)
    if not path.exists():
        if artifact:
            raise FileNotFoundError(f"engine artifact {path} not found (build it with `usnst engine build`)")
        log.info("exporting %s to ONNX at %s", checkpoint, path)
        export_onnx(checkpoint, path)
    try:
        check_artifact(path, checkpoint)
    except EngineMismatch:
        if artifact:
            raise
        log.warning("cached ONNX artifact %s failed its check; exporting it again", path)  # ours to rebuild
        export_onnx(checkpoint, path)
        check_artifact(path, checkpoint)
    _, meta = load_checkpoint(checkpoint)
    return OnnxRuntimeEngine(path, options, {"checkpoint": str(checkpoint), "checkpoint_sha256": sha,
                                             "task": meta.get("task")})


def build_onnx(checkpoint: str | os.PathLike, out: str | os.PathLike, precision: str | None = None,
               shapes: str | None = None, device: str | None = None) -> Path:
    """``usnst engine build --backend onnxruntime`` (``Backend.build``): fp32, any frame size, so ``shapes`` and
    ``device`` do not apply."""
    if precision not in (None, "fp32"):
        raise BackendUnavailable("ONNX artifacts are fp32 (ONNX Runtime on CPU); fp16 engines are built with tensorrt")
    return export_onnx(checkpoint, out)
