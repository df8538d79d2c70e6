"""TensorRT backend: torch-tensorrt's ahead-of-time dynamo path (``pip install usnst[tensorrt]``, NVIDIA GPU).

What the engine is, and why:
- The compiled graph is the network body with the noise planes as *inputs*: torch-tensorrt turns in-graph
  ``randn`` into one sample frozen at build time (pytorch/TensorRT#2580), which would make noise injection a
  constant. Noise is drawn per frame on the GPU by a seeded torch generator (``BodyEngine``).
- fp16 keeps every InstanceNorm in fp32 (explicit casts around it, built with explicit typing): the variance of
  an fp16 instance norm overflows in several runtimes (NVIDIA/TensorRT#3101). Other layers run in fp16.
- Frame sizes: one static size, or a declared range ``min:opt:max``; the compiled body sees frames padded by the
  net's ``FrameGeometry``, which also gives the noise planes' shapes and dynamic dimensions.
- The artifact is a torch ExportedProgram (``.ep``) beside a JSON sidecar recording the checkpoint's and the
  artifact's SHA-256, precision, shape range, GPU and library versions. Loading refuses another checkpoint,
  a modified artifact, another precision or a GPU of another compute capability, each with the command to rebuild.
"""
from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from usnst.engines.base import (
    BackendUnavailable,
    EngineMismatch,
    EngineOptions,
    check_device,
)
from usnst.engines.body_engine import BodyEngine
from usnst.engines.checkpoint import (
    code_version,
    file_sha256,
    load_checkpoint,
    recorded_stages,
)
from usnst.engines.geometry import BodyModule, FrameGeometry
from usnst_io.atomic import atomic_path

log = logging.getLogger(__name__)

DEFAULT_SHAPES = "256x256:512x512:1024x1024"


@dataclass(frozen=True)
class ShapeRange:
    """Frame sizes an engine accepts, as (height, width): one static size when min == opt == max."""

    min: tuple[int, int]
    opt: tuple[int, int]
    max: tuple[int, int]

    @classmethod
    def parse(cls, text: str) -> "ShapeRange":
        """``512x512`` (static) or ``256x256:512x512:1024x1024`` (min:opt:max); sizes are HEIGHTxWIDTH."""
        try:
            sizes = [tuple(int(v) for v in part.lower().split("x")) for part in text.split(":")]
        except ValueError:
            sizes = []
        if len(sizes) not in (1, 3) or any(len(s) != 2 or min(s) < 1 for s in sizes):
            raise ValueError(f"shape must be HxW or MINHxMINW:OPTHxOPTW:MAXHxMAXW, got {text!r}")
        lo, opt, hi = (sizes * 3)[:3] if len(sizes) == 1 else sizes
        if not (lo[0] <= opt[0] <= hi[0] and lo[1] <= opt[1] <= hi[1]):
            raise ValueError(f"shape range must satisfy min <= opt <= max in both dimensions, got {text!r}")
        return cls(lo, opt, hi)

    @property
    def static(self) -> bool:
        return self.min == self.opt == self.max

    def contains(self, h: int, w: int) -> bool:
        return self.min[0] <= h <= self.max[0] and self.min[1] <= w <= self.max[1]

    def padded(self, geometry: FrameGeometry) -> "ShapeRange":
        """The same range in padded body sizes (what the compiled graph sees)."""
        return ShapeRange(*(geometry.padded_size(*s) for s in (self.min, self.opt, self.max)))

    def __str__(self) -> str:
        fmt = "{}x{}".format
        return fmt(*self.opt) if self.static else ":".join(fmt(*s) for s in (self.min, self.opt, self.max))


class Fp32InstanceNorm(nn.Module):
    """An InstanceNorm2d computed in fp32 inside an fp16 network (cast in, normalise, cast back)."""

    def __init__(self, norm: nn.InstanceNorm2d):
        super().__init__()
        self.norm = norm.float()

    def forward(self, x):
        return self.norm(x.float()).to(x.dtype)


def half_with_fp32_norms(net: nn.Module) -> nn.Module:
    """A copy of ``net`` in fp16 whose instance norms stay fp32."""
    net = copy.deepcopy(net).half()
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.InstanceNorm2d):
                setattr(parent, name, Fp32InstanceNorm(child))
    return net


def _import_torch_tensorrt():
    try:
        import torch_tensorrt
    except ImportError as exc:
        raise BackendUnavailable(f"tensorrt backend: torch-tensorrt is not installed ({exc}); "
                                 "`pip install usnst[tensorrt]` on a machine with an NVIDIA GPU") from exc
    return torch_tensorrt


def _gpu_identity(device: torch.device) -> dict:
    props = torch.cuda.get_device_properties(device)
    return {"gpu": props.name, "compute_capability": f"{props.major}.{props.minor}"}


def sidecar_path(artifact: str | os.PathLike) -> Path:
    return Path(str(artifact) + ".json")


def build_tensorrt(checkpoint: str | os.PathLike, out: str | os.PathLike, precision: str | None = "fp16",
                   shapes: ShapeRange | str | None = DEFAULT_SHAPES, device: str | None = "cuda") -> Path:
    """Compile ``checkpoint`` with torch-tensorrt and save the ExportedProgram plus its JSON sidecar (atomic);
    ``Backend.build`` of the tensorrt backend (fp16 and the default shape range unless told)."""
    torch_tensorrt = _import_torch_tensorrt()
    precision, device = precision or "fp16", device or "cuda"
    check_device(EngineOptions(device=device, precision=precision))
    if not device.startswith("cuda"):
        raise BackendUnavailable("tensorrt engines are built on a CUDA device")
    shapes = ShapeRange.parse(shapes or DEFAULT_SHAPES) if not isinstance(shapes, ShapeRange) else shapes
    net, meta = load_checkpoint(checkpoint)
    geometry = net.geometry
    dtype = torch.float16 if precision == "fp16" else torch.float32
    compiled_net = half_with_fp32_norms(net) if precision == "fp16" else net
    body = BodyModule(compiled_net).eval().to(device)
    padded = shapes.padded(geometry)
    m = geometry.multiple

    def arg_shapes(h, w):
        return [(1, 1, h, w)] + [tuple(s) for s in geometry.noise_shapes(1, h, w)]

    example = [torch.zeros(s, device=device, dtype=dtype) for s in arg_shapes(*padded.opt)]
    dynamic = None
    if not padded.static:  # H = multiple·kh, W = multiple·kw; each noise plane follows its scale
        kh = torch.export.Dim("kh", min=padded.min[0] // m, max=padded.max[0] // m)
        kw = torch.export.Dim("kw", min=padded.min[1] // m, max=padded.max[1] // m)
        dynamic = geometry.export_dims(kh, kw)
    with torch.no_grad():
        program = torch.export.export(body, tuple(example), dynamic_shapes=dynamic)
    inputs = [torch_tensorrt.Input(min_shape=lo, opt_shape=opt, max_shape=hi, dtype=dtype)
              for lo, opt, hi in zip(arg_shapes(*padded.min), arg_shapes(*padded.opt), arg_shapes(*padded.max))]
    log.info("building TensorRT %s engine for %s, frames %s (this takes minutes)", precision, checkpoint, shapes)
    trt_module = torch_tensorrt.dynamo.compile(program, arg_inputs=inputs, use_explicit_typing=True,
                                               min_block_size=1)
    out = Path(out)
    save_kwargs = {"dynamic_shapes": dynamic} if dynamic else {}
    with atomic_path(out, suffix=".ep") as tmp, atomic_path(sidecar_path(out)) as side_tmp:
        torch_tensorrt.save(trt_module, str(tmp), output_format="exported_program", arg_inputs=example, **save_kwargs)
        record = engine_record(checkpoint, tmp, precision, shapes, _gpu_identity(torch.device(device)),
                               torch_tensorrt=getattr(torch_tensorrt, "__version__", "unknown"), task=meta.get("task"),
                               checkpoint=str(Path(checkpoint).resolve()),
                               stages=recorded_stages(meta))
        side_tmp.write_text(json.dumps(record, indent=2))
    return out


def engine_record(checkpoint, artifact, precision: str, shapes: ShapeRange, gpu: dict, **extra) -> dict:
    """What the sidecar says about an engine: where it came from and what it may run on."""
    return {"format": "usnst-tensorrt", "checkpoint_sha256": file_sha256(checkpoint),
            "artifact_sha256": file_sha256(artifact), "backend": "tensorrt", "precision": precision,
            "shapes": asdict(shapes), "noise": "input", **gpu, "torch": torch.__version__, "usnst": code_version(),
            **extra}


def read_sidecar(artifact: str | os.PathLike) -> dict:
    side = sidecar_path(artifact)
    if not side.is_file():
        raise EngineMismatch(f"{artifact} has no {side.name} beside it: not a usnst TensorRT engine "
                             "(build one with `usnst engine build --backend tensorrt`)")
    record = json.loads(side.read_text())
    if record.get("format") != "usnst-tensorrt":
        raise EngineMismatch(f"{side} is not a usnst TensorRT engine record")
    return record


def verify_artifact(artifact: str | os.PathLike, checkpoint: str | os.PathLike, precision: str,
                    gpu: dict | None = None) -> dict:
    """The sidecar record, after checking that the artifact belongs to ``checkpoint``/``precision``/this GPU and
    is byte-for-byte what was built. Raises EngineMismatch naming what differs and the rebuild command."""
    record = read_sidecar(artifact)
    rebuild = f"rebuild it with `usnst engine build --backend tensorrt --model {checkpoint} --precision {precision}`"
    if record["checkpoint_sha256"] != file_sha256(checkpoint):
        raise EngineMismatch(f"{artifact} was built from checkpoint {record['checkpoint_sha256'][:12]}…, "
                             f"not from {checkpoint}: {rebuild}")
    if record["artifact_sha256"] != file_sha256(artifact):
        raise EngineMismatch(f"{artifact} differs from the engine that was built (modified or corrupted): {rebuild}")
    if record["precision"] != precision:
        raise EngineMismatch(f"{artifact} is a {record['precision']} engine, {precision} was asked for: {rebuild}")
    if gpu and record.get("compute_capability") != gpu["compute_capability"]:
        raise EngineMismatch(f"{artifact} was built for {record.get('gpu')} (compute {record.get('compute_capability')}), "
                             f"this is {gpu['gpu']} (compute {gpu['compute_capability']}): {rebuild}")
    return record


def default_artifact_path(sha: str, precision: str, gpu: dict) -> Path:
    root = Path(os.environ.get("USNST_CACHE", Path.home() / ".cache" / "usnst")) / "engines"
    return root / f"{sha[:16]}-{precision}-sm{gpu['compute_capability'].replace('.', '')}.ep"


class TensorRtEngine(BodyEngine):
    """A BodyEngine over the loaded TensorRT program that refuses frames outside the built shape range."""

    def __init__(self, *args, shapes: ShapeRange, **kwargs):
        super().__init__(*args, **kwargs)
        self.shapes = shapes

    def infer(self, frame):
        if frame.ndim == 2 and not self.shapes.contains(*frame.shape):
            raise ValueError(f"frame {frame.shape[0]}x{frame.shape[1]} is outside this TensorRT engine's sizes "
                             f"({self.shapes}); rebuild with `usnst engine build --backend tensorrt --shapes ...`")
        return super().infer(frame)


def load_tensorrt_artifact(artifact: str, options: EngineOptions) -> TensorRtEngine:
    """A TensorRT engine named alone (`--model m.ep`): its sidecar names the checkpoint it was built from (the net
    supplies padding and noise shapes), which must still be there and unchanged."""
    checkpoint = read_sidecar(artifact).get("checkpoint")
    if not checkpoint or not Path(checkpoint).is_file():
        raise EngineMismatch(f"{artifact}: the checkpoint it was built from ({checkpoint or 'not recorded'}) is not "
                             f"here; run it as --model CHECKPOINT --engine {artifact}")
    return load_tensorrt_engine(checkpoint, options, artifact)


def load_tensorrt_engine(checkpoint: str, options: EngineOptions, artifact: str | None = None) -> TensorRtEngine:
    """The TensorRT engine for ``checkpoint``: from ``artifact`` if given, else from the cache, built there the
    first time (fp16 by default on GPU when options ask for it)."""
    torch_tensorrt = _import_torch_tensorrt()
    device = options.device if options.device.startswith("cuda") else "cuda"
    options = EngineOptions(**{**asdict(options), "device": device})
    check_device(options)
    gpu = _gpu_identity(torch.device(device))
    path = Path(artifact) if artifact else default_artifact_path(file_sha256(checkpoint), options.precision, gpu)
    if not path.exists():
        if artifact:
            raise FileNotFoundError(f"engine artifact {path} not found (build it with `usnst engine build --backend tensorrt`)")
        build_tensorrt(checkpoint, path, options.precision, DEFAULT_SHAPES, device)
    record = verify_artifact(path, checkpoint, options.precision, gpu)
    module = torch_tensorrt.load(str(path)).module()
    net, meta = load_checkpoint(checkpoint)
    dtype = torch.float16 if options.precision == "fp16" else torch.float32
    shapes = ShapeRange(*(tuple(record["shapes"][k]) for k in ("min", "opt", "max")))
    source = {"artifact": str(path), "checkpoint": str(checkpoint), "checkpoint_sha256": record["checkpoint_sha256"],
              "task": meta.get("task"), "shapes": str(shapes), "gpu": gpu["gpu"]}
    return TensorRtEngine("tensorrt", net, module, options, device, dtype, source, shapes=shapes)

