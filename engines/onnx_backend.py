"""ONNX export of the transform net and the ONNX Runtime backend.

The exported graph is the network body on a padded frame (``FrameNet.body``), with dynamic height and width and
the noise planes as graph *inputs* (random ops would be frozen at export). Padding, noise generation and cropping
happen here, around the session, from the net's ``FrameGeometry``, which the artifact records in its metadata
together with what it was built from (checkpoint SHA-256, precision, usnst version); loading refuses an artifact
built from another checkpoint.

What the checks prove (README, "Engine artifacts: what is checked"): the recorded graph hash only catches accidental
damage — whoever edits a graph can restate the hash. So an artifact is *verified* only by what it cannot restate
about itself: its checkpoint, when that file is at hand (given, or an embedded model with the recorded hash), is
exported again here and must give the same graph, geometry and stages; or, when an artifact key is configured, an
HMAC-SHA256 made with that key at build time must match. An artifact verified neither way still runs, but is
named by its own file hash, never by the checkpoint it claims.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from usnst.engines.base import (
    BackendUnavailable,
    Engine,
    EngineMismatch,
    EngineOptions,
    NoisePlanes,
    check_frame,
)
from usnst.engines.checkpoint import (
    code_version,
    file_sha256,
    load_checkpoint,
    read_checkpoint,
)
from usnst.engines.geometry import BodyModule, FrameGeometry, FrameNet
from usnst_io.atomic import atomic_path

log = logging.getLogger(__name__)

OPSET = 17
META_SHA = "usnst.checkpoint_sha256"
META_GRAPH = "usnst.graph_sha256"  # of the serialized graph (nodes + weights): detects an edited artifact
META_GEOMETRY = "usnst.geometry"  # the net's FrameGeometry as JSON: padding and noise planes
META_STAGES = "usnst.stages"  # what runs after the net, as the checkpoint records it (beam speckle), as JSON
META_SIGNATURE = "usnst.signature"  # HMAC-SHA256 over the graph and every other metadata entry, with an artifact key
KEY_ENV = "USNST_ARTIFACT_KEY"  # path of the artifact key file, when not given on the command line


def export_onnx(checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Export a checkpoint (any architecture) to ONNX (fp32, dynamic H×W); written atomically."""
    from usnst.engines.checkpoint import recorded_stages

    net, meta = load_checkpoint(checkpoint)
    stages = recorded_stages(meta)
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
    return _load(path)[1].get(META_SHA)


def artifact_stages(path: str | os.PathLike) -> dict:
    """The stages an artifact's checkpoint runs after its net (empty for exports that record none)."""
    try:
        return json.loads(_load(path)[1].get(META_STAGES, "{}"))
    except json.JSONDecodeError:
        raise EngineMismatch(f"{path}: its recorded stages ({META_STAGES}) are not JSON: damaged or edited") from None


def _load(path) -> tuple:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises its own DecodeError for a truncated or foreign file
        raise EngineMismatch(f"{path} is not a readable ONNX file ({exc.__class__.__name__}): truncated or damaged? "
                             "Rebuild it with `usnst engine build`") from None
    return model, {p.key: p.value for p in model.metadata_props}


def check_artifact(path: str | os.PathLike, checkpoint: str | os.PathLike, verify: bool = True,
                   key: str | None = None) -> None:
    """Refuse an artifact built from another checkpoint, or changed after it was built. With ``verify`` (an artifact
    a user gave), the checkpoint is exported again and must give the very same graph: a stored hash alone can be
    restated by whoever edited the graph. ``key``: also check the artifact's signature."""
    model, meta = _load(path)
    sha = file_sha256(checkpoint)
    rebuild = f"rebuild it with `usnst engine build --model {checkpoint}`"
    if meta.get(META_SHA) != sha:
        raise EngineMismatch(f"{path} was built from checkpoint {str(meta.get(META_SHA))[:12]}…, not from {checkpoint} "
                             f"({sha[:12]}…): {rebuild}")
    if META_GEOMETRY not in meta:
        raise EngineMismatch(f"{path} records no frame geometry (built by an older usnst): {rebuild}")
    if meta.get(META_GRAPH) != graph_sha256(model):
        raise EngineMismatch(f"{path}: its graph differs from the one exported (modified or corrupted): {rebuild}")
    if key:
        check_signature(path, key)
    if verify:
        _same_as_export(path, model, meta, checkpoint, rebuild)


def _same_as_export(path, model, meta: dict, checkpoint, rebuild: str) -> None:
    """The artifact against a fresh export of its checkpoint: graph, geometry and stages (what decides the output)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        fresh_model, fresh = _load(export_onnx(checkpoint, Path(d) / "fresh.onnx"))
    for key, what in ((META_GEOMETRY, "frame geometry"), (META_STAGES, "stages after the net")):
        if meta.get(key, "{}" if key == META_STAGES else None) != fresh.get(key):
            raise EngineMismatch(f"{path}: its {what} ({key}) is not what {checkpoint} records: edited? {rebuild}")
    if graph_sha256(model) != graph_sha256(fresh_model):
        raise EngineMismatch(f"{path}: its graph is not what {checkpoint} exports to here (edited after it was built, "
                             f"or built by another torch version): {rebuild}")


def _signed_bytes(model) -> bytes:
    entries = sorted((p.key, p.value) for p in model.metadata_props if p.key != META_SIGNATURE)
    return model.graph.SerializeToString() + json.dumps(entries).encode()


def read_key(path: str | os.PathLike) -> bytes:
    """An artifact key file: at least 32 bytes of secret (`usnst engine key` writes one)."""
    try:
        data = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ValueError(f"artifact key {path}: {exc.strerror}") from None
    if len(data) < 32:
        raise ValueError(f"artifact key {path} holds {len(data)} bytes; a key needs at least 32 (`usnst engine key`)")
    return data


def sign_artifact(path: str | os.PathLike, key: str | os.PathLike) -> None:
    """Add an HMAC-SHA256 of the artifact (graph and metadata) made with ``key``; rewritten atomically."""
    import onnx

    model, _ = _load(path)
    for entry in [p for p in model.metadata_props if p.key == META_SIGNATURE]:
        model.metadata_props.remove(entry)
    entry = model.metadata_props.add()
    entry.key = META_SIGNATURE
    entry.value = "hmac-sha256:" + hmac.new(read_key(key), _signed_bytes(model), hashlib.sha256).hexdigest()
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))


def check_signature(path: str | os.PathLike, key: str | os.PathLike) -> None:
    model, meta = _load(path)
    stored = meta.get(META_SIGNATURE)
    if stored is None:
        raise EngineMismatch(f"{path} is not signed, and an artifact key is configured ({key}): sign it at build time "
                             "with `usnst engine build --sign-key KEY`")
    expected = "hmac-sha256:" + hmac.new(read_key(key), _signed_bytes(model), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(stored, expected):
        raise EngineMismatch(f"{path}: its signature does not match the artifact key {key}: edited after signing, or "
                             "signed with another key")


def _embedded_checkpoint(sha: str | None) -> Path | None:
    """The shipped model whose file has hash ``sha``, if any: an artifact of it can be verified without being told."""
    from usnst.engines.checkpoint import default_model_path, embedded_models

    for name in embedded_models() if sha else ():
        path = default_model_path(name)
        if file_sha256(path) == sha:
            return path
    return None


def load_onnx_artifact(artifact: str, options: EngineOptions) -> OnnxRuntimeEngine:
    """An ONNX artifact on its own (`--model m.onnx`): padding and noise from the geometry it records. Verified when
    an artifact key is configured (its signature) or when its checkpoint is an embedded model (exported again and
    compared); otherwise it runs, named by its own hash (``artifact_sha256``), its checkpoint only *claimed*."""
    model, meta = _load(artifact)
    if META_GRAPH not in meta or meta[META_GRAPH] != graph_sha256(model):
        raise EngineMismatch(f"{artifact}: not a usnst ONNX export, or its graph was changed after export "
                             "(rebuild it with `usnst engine build`)")
    claimed = meta.get(META_SHA)
    source = {"artifact_sha256": file_sha256(artifact), "task": meta.get("usnst.task")}
    checkpoint = _embedded_checkpoint(claimed)
    if options.artifact_key:
        check_signature(artifact, options.artifact_key)
        source.update(checkpoint_sha256=claimed, verified="signature")
    elif checkpoint is not None:
        _same_as_export(artifact, model, meta, checkpoint, f"rebuild it with `usnst engine build --model {checkpoint.stem}`")
        source.update(checkpoint_sha256=claimed, checkpoint=str(checkpoint), verified="checkpoint")
    else:
        log.warning("%s is not verified: the checkpoint it names (%s…) is not at hand and no artifact key is "
                    "configured; its outputs are labelled with the artifact's own hash", artifact, str(claimed)[:12])
        source.update(claimed_checkpoint_sha256=claimed, verified="no")
    return OnnxRuntimeEngine(artifact, options, source)


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
    try:  # a given artifact is verified against its checkpoint; the cache is usnst's own, checked for damage
        check_artifact(path, checkpoint, verify=bool(artifact), key=options.artifact_key if artifact else None)
    except EngineMismatch:
        if artifact:
            raise
        log.warning("cached ONNX artifact %s failed its check; exporting it again", path)  # ours to rebuild
        export_onnx(checkpoint, path)
        check_artifact(path, checkpoint, verify=False)
    meta = read_checkpoint(checkpoint)["meta"]  # the task: no network to build for that
    return OnnxRuntimeEngine(path, options, {"checkpoint": str(checkpoint), "checkpoint_sha256": sha,
                                             "task": meta.get("task"),
                                             "verified": "checkpoint" if artifact else "built here"})


def build_onnx(checkpoint: str | os.PathLike, out: str | os.PathLike, precision: str | None = None,
               shapes: str | None = None, device: str | None = None) -> Path:
    """``usnst engine build --backend onnxruntime`` (``Backend.build``): fp32, any frame size, so ``shapes`` and
    ``device`` do not apply (refused when given)."""
    if precision not in (None, "fp32"):
        raise BackendUnavailable("ONNX artifacts are fp32 (ONNX Runtime on CPU); fp16 engines are built with tensorrt")
    if shapes or device:
        raise ValueError("--shapes and --device are for tensorrt builds; an ONNX artifact takes any frame size and "
                         "runs where ONNX Runtime runs")
    return export_onnx(checkpoint, out)
