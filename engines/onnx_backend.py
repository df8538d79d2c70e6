"""ONNX export of the transform net and the ONNX Runtime backend.

The exported graph is the network body on a frame already padded to a multiple of 4 (``TransformerNet.body``),
with dynamic height and width and the noise planes as graph *inputs* (random ops would be frozen at export).
Padding, noise generation and cropping happen here, around the session, exactly as ``TransformerNet.forward`` does
them. The artifact records what it was built from (checkpoint SHA-256, precision, usnst version) in the ONNX
metadata, and loading refuses an artifact built from another checkpoint.
"""
from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from engines.backends import Engine, EngineMismatch, EngineOptions, NoisePlanes
from engines.body_engine import BodyModule, pad_multiple
from engines.checkpoint import code_version, file_sha256, load_checkpoint

log = logging.getLogger(__name__)

OPSET = 17
META_SHA = "usnst.checkpoint_sha256"
META_GRAPH = "usnst.graph_sha256"  # of the serialized graph (nodes + weights): detects an edited artifact


def export_onnx(checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Export a checkpoint (either architecture) to ONNX (fp32, dynamic H×W); written atomically."""
    import onnx

    net, meta = load_checkpoint(checkpoint)
    h, w = 64, 80
    frame = torch.rand(1, 1, h, w)
    noise = [torch.randn(s) for s in net.noise_shapes(1, h, w)]
    names = ["frame"] + [f"noise{i + 1}" for i in range(len(noise))]
    axes = {"frame": {2: "H", 3: "W"}, "styled": {2: "H", 3: "W"}}
    if noise:
        axes.update({"noise1": {2: "H_2", 3: "W_2"}, "noise2": {2: "H", 3: "W"}})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and shape-inference chatter
        torch.onnx.export(BodyModule(net).eval(), (frame, *noise), str(tmp), input_names=names, output_names=["styled"],
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    model = onnx.load(str(tmp))
    graph_sha = graph_sha256(model)
    multiple = pad_multiple(net)  # the graph needs H and W divisible by this, and ≥ twice it
    for key, value in {META_SHA: file_sha256(checkpoint), META_GRAPH: graph_sha, "usnst.backend": "onnxruntime", "usnst.precision": "fp32",
                       "usnst.pad_multiple": str(multiple),
                       "usnst.noise": str(bool(noise)).lower(), "usnst.version": code_version(),
                       "usnst.task": str(meta.get("task"))}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(tmp))
    os.replace(tmp, out)
    return out


def graph_sha256(model) -> str:
    return hashlib.sha256(model.graph.SerializeToString()).hexdigest()


def artifact_checkpoint_sha(path: str | os.PathLike) -> str | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((p.value for p in model.metadata_props if p.key == META_SHA), None)


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
    if meta.get(META_GRAPH) != graph_sha256(model):
        raise EngineMismatch(f"{path}: its graph differs from the one exported (modified or corrupted): {rebuild}")


def default_artifact_path(sha: str) -> Path:
    root = Path(os.environ.get("USNST_CACHE", Path.home() / ".cache" / "usnst")) / "engines"
    return root / f"{sha[:16]}-fp32.onnx"


def providers() -> list[str]:
    """CUDA and TensorRT execution providers when this onnxruntime build has them, CPU always."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available] + ["CPUExecutionProvider"]


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"

    def __init__(self, artifact: str | os.PathLike, options: EngineOptions = EngineOptions(), source: dict | None = None):
        import onnxruntime as ort

        so = ort.SessionOptions()
        if options.threads:
            so.intra_op_num_threads = options.threads
        self.session = ort.InferenceSession(str(artifact), so, providers=providers())
        self.noise_inputs = [i.name for i in self.session.get_inputs() if i.name.startswith("noise")]
        meta = self.session.get_modelmeta().custom_metadata_map
        self.multiple = int(meta.get("usnst.pad_multiple", 4))
        self.options = options
        self.rng = np.random.default_rng(options.seed)
        self.noise = NoisePlanes(options.noise,
                                 lambda shapes: [self.rng.standard_normal(s, dtype=np.float32) for s in shapes],
                                 lambda shapes: [np.zeros(s, np.float32) for s in shapes])
        self.source = {"artifact": str(artifact), **(source or {})}

    def infer(self, frame: np.ndarray) -> np.ndarray:
        if frame.ndim != 2:
            raise ValueError(f"engine expects a 2-D grayscale frame, got shape {frame.shape}")
        h, w = frame.shape
        m = self.multiple
        ph, pw = max(2 * m, (h + m - 1) // m * m), max(2 * m, (w + m - 1) // m * m)
        x = np.asarray(frame, np.float32)
        if (ph, pw) != (h, w):  # as the network's own forward pads: reflect, or edge for tiny frames
            mode = "reflect" if ph - h < h and pw - w < w else "edge"
            x = np.pad(x, ((0, ph - h), (0, pw - w)), mode=mode)
        feeds = {"frame": x[None, None]}
        shapes = [(1, 1, ph // 2, pw // 2), (1, 1, ph, pw)][:len(self.noise_inputs)]
        feeds.update(zip(self.noise_inputs, self.noise.planes(shapes)))
        y = self.session.run(None, feeds)[0][0, 0, :h, :w]
        return np.clip(y, 0.0, 1.0)

    def describe(self) -> dict:
        return {"backend": self.name, "providers": self.session.get_providers(), "noise": self.options.noise,
                "seed": self.options.seed, **self.source}


def load_onnx_engine(checkpoint: str, options: EngineOptions, artifact: str | None = None) -> OnnxRuntimeEngine:
    """The ONNX Runtime engine for ``checkpoint``: from ``artifact`` if given (refused if built from another
    checkpoint or edited), else from the cache, exported there the first time and again if the cached file fails
    its check (the cache is usnst's own)."""
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
