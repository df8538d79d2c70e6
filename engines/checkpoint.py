"""Checkpoint files: the one documented container for a trained transform net (docs/CHECKPOINT.md).

A checkpoint is a ``torch.save`` of plain containers only — tensors, numbers, strings, lists, dicts —
so it loads with ``torch.load(weights_only=True)`` and opening a file never runs code from it.
"""
from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import os
from importlib import metadata as _metadata
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from usnst_io.atomic import atomic_path

if TYPE_CHECKING:  # torch and the nets load when a checkpoint is opened, so the command line starts without them
    import torch

FORMAT = "usnst-checkpoint"
FORMAT_VERSION = 1
# The embedded model a command runs when none is named, on any device: the real-time net keeps up with a simulator
# on a CPU, and the full net (`lq2hq`), rebuilt by its recipe, reads no more realistic on the phantom (their cards).
DEFAULT_MODEL = "lq2hq_fast"


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable or not a usnst checkpoint."""


def code_version() -> str:
    try:
        return _metadata.version("usnst")
    except _metadata.PackageNotFoundError:
        return "unknown"


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, meta: dict | None = None) -> Path:
    """Write ``model`` with its config and metadata; atomic (temp file then rename) so a crash never
    leaves a half-written checkpoint where a good one was."""
    import torch

    path = Path(path)
    meta = dict(meta or {})
    meta.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    meta.setdefault("code_version", code_version())
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "meta": meta,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def _file_identity(path: Path) -> tuple:
    """What tells one version of a file from another without reading it: a rewritten file (atomic writes replace
    the inode) changes this, so a cache keyed by it is never stale."""
    st = path.stat()
    return (os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint's raw dict, validated; raises CheckpointError with a sentence a user can act on. Read once per
    version of the file: loading an engine asks for it from the backend, the stages and the provenance alike."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (train one with `usnst train` or omit --model for the default)")
    return _read_checkpoint(_file_identity(path))


@functools.lru_cache(maxsize=4)
def _read_checkpoint(identity: tuple) -> dict:
    import torch

    path = Path(identity[0])
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip, unsafe globals... (torch's own text runs to pages)
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"{path} is not a loadable usnst checkpoint ({exc.__class__.__name__}: {first})") \
            from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a usnst checkpoint (no '{FORMAT}' format marker)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {payload.get('format_version')}; this usnst reads {FORMAT_VERSION}"
        )
    for key in ("config", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise CheckpointError(f"{path}: its '{key}' is missing or not a map: a damaged or hand-made file")
    if not isinstance(payload.get("meta", {}), dict):
        raise CheckpointError(f"{path}: its 'meta' is not a map: a damaged or hand-made file")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload["state_dict"].items()):
        raise CheckpointError(f"{path}: its 'state_dict' holds something other than named tensors")
    return payload


def build_model(config: dict) -> torch.nn.Module:
    """The network a stored config describes: the Johnson net, or the CPU real-time net (``arch: fast``)."""
    if config.get("arch") == "fast":
        from usnst.engines.fast_net import FastNet, FastNetConfig

        return FastNet(FastNetConfig.from_dict(config))
    from usnst.engines.transformer_net import NetConfig, TransformerNet

    return TransformerNet(NetConfig.from_dict(config))


def load_checkpoint(path: str | os.PathLike) -> tuple[torch.nn.Module, dict]:
    """Rebuild the network a checkpoint describes; returns (model in eval mode, metadata). The stored config is
    checked against what the architectures mean before any weight is allocated (usnst_io.limits)."""
    payload = read_checkpoint(path)
    try:
        model = build_model(payload["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its network config is invalid: {exc}") from None
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise CheckpointError(f"{path}: weights do not match the stored network config ({first})") from None
    model.eval()
    return model, dict(payload.get("meta", {}))


def recorded_stages(meta: dict) -> dict:
    """The entries of a checkpoint's metadata that name stages run after its net (beam speckle, a scanner texture),
    as engine artifacts record them."""
    from usnst.engines.beam_speckle import META_KEY
    from usnst.engines.scanner_texture import META_KEY as TEXTURE_KEY

    return {key: meta[key] for key in (META_KEY, TEXTURE_KEY) if meta.get(key)}


def file_sha256(path: str | os.PathLike) -> str:
    """Identity of a checkpoint file: engines built from it record this hash. Hashed once per version of the file."""
    return _sha256(_file_identity(Path(path)))


@functools.lru_cache(maxsize=16)
def _sha256(identity: tuple) -> str:
    h = hashlib.sha256()
    with open(identity[0], "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def embedded_models() -> list[str]:
    """Names of the models shipped inside the package (engines/default_models/NAME.pt)."""
    folder = Path(str(resources.files("usnst.engines") / "default_models"))
    return sorted(p.stem for p in folder.glob("*.pt"))


def default_model_path(name: str = DEFAULT_MODEL) -> Path:
    """Path of a model shipped inside the package (engines/default_models/NAME.pt)."""
    path = Path(str(resources.files("usnst.engines") / "default_models" / f"{name}.pt"))
    if not path.is_file():
        raise CheckpointError(f"no embedded model named {name!r}; embedded models: {', '.join(embedded_models())}")
    return path


def resolve_model(model: str | os.PathLike | None) -> Path:
    """A --model value: None or 'default' → the embedded default (DEFAULT_MODEL), an embedded name, or a file path."""
    if model is None or str(model) == "default":
        return default_model_path(DEFAULT_MODEL)
    p = Path(model)
    if p.suffix == "" and not p.exists():
        return default_model_path(str(model))
    return p
