"""The in-process API: style transfer inside a simulator, no sockets.

    import numpy as np
    from usnst import Stylizer

    stylizer = Stylizer("lq2hq_fast", backend="onnxruntime")  # a name, a checkpoint, or an artifact (.onnx, .ep)
    frame = np.zeros((512, 512), np.uint8)                    # uint8, uint16 or float32 in [0, 1]; (H, W) or (H, W, C)
    styled = stylizer(frame)                                  # same shape and dtype as the frame

It is the node's own path — the same engine loading, noise modes and pixel conversions (usnst_stream.frames) — so
a frame gives the same output here as through `usnst serve` with the same options.
"""
from __future__ import annotations

import numpy as np

from usnst.engines.base import EngineOptions
from usnst.engines.registry import load_engine
from usnst_io import protocol
from usnst_stream import frames


class Stylizer:
    """One loaded model on one backend. ``noise``: ``fixed`` (default; a still scene gives a still output),
    ``frame`` (fresh speckle every call) or ``off``; ``seed`` makes the noise reproducible. Not thread-safe: use
    one Stylizer per thread."""

    def __init__(self, model: str | None = None, backend: str | None = None, noise: str = EngineOptions.noise,
                 seed: int = EngineOptions.seed, threads: int | None = EngineOptions.threads,
                 device: str = EngineOptions.device, precision: str = EngineOptions.precision,
                 engine_artifact: str | None = None):
        self.engine = load_engine(model, backend, EngineOptions(noise=noise, seed=seed, threads=threads,
                                                                device=device, precision=precision), engine_artifact)

    def __call__(self, frame: np.ndarray, pose: np.ndarray | None = None,
                 spacing_mm: tuple[float, float] | None = None) -> np.ndarray:
        """The stylized frame, in the input's shape and dtype (uint8/uint16 full range, float32 in [0, 1]; colour
        input becomes grey repeated over its channels). ``pose``: the frame's 4×4 image-to-world matrix (pixel
        (column, row, 0, 1) → world mm), if the simulator knows it: the grain then follows the probe exactly
        instead of the motion estimated from the frames (noise ``fixed``), and keeps its size in mm.
        ``spacing_mm``: (row, column) mm per pixel, for a simulator that knows its depth but not its pose: the
        grain keeps its size in mm (a shallow linear view's is coarser in pixels than a deep sector's)."""
        pixels = np.asarray(frame)
        if pixels.dtype.name not in ("uint8", "uint16", "float32"):
            raise ValueError(f"frames must be uint8, uint16 or float32, got {pixels.dtype}")
        if pixels.ndim not in (2, 3):
            raise ValueError(f"a frame is (H, W) or (H, W, C), got shape {pixels.shape}")
        if pose is not None:
            pose = protocol.image_to_world({protocol.IMAGE_TO_WORLD: np.asarray(pose, float).ravel().tolist()})
        if spacing_mm is not None:
            spacing_mm = protocol.spacing_mm({protocol.SPACING_MM: np.asarray(spacing_mm).ravel().tolist()})
        return frames.from_engine(self.engine.infer_at(frames.to_engine(pixels), pose, spacing_mm), pixels)

    stylize = __call__

    def describe(self) -> dict:
        """Backend, device, noise, seed and the checkpoint's identity (SHA-256) — what to log beside outputs."""
        return self.engine.describe()
