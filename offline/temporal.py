"""Temporal stability of stylized sequences: does the output flicker where the input does not?

A per-frame network can make a still scene shimmer (fresh injected noise every frame makes speckle 'boil') even
when each frame alone looks right. The measure compares how much the output changes from frame to frame with how
much the input does, on the same frames:

- ``ratio`` = mean |y_t − y_{t−1}| / mean |x_t − x_{t−1}|: 1 means the output moves exactly as much as the input,
  above 1 means added temporal change (flicker), below 1 means the output smooths motion away.
- ``static_output_change``: mean |y_t − y_{t−1}| over the pairs whose *input* did not change at all; a stable
  stylization gives 0 there. Values are in grey levels (0–255).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from usnst_io.dicom import DICOM_SUFFIXES, read_dicom

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv"}


def read_sequence(path: str | Path) -> list[np.ndarray]:
    """Grayscale uint8 frames of a folder of images (sorted by name), a video file or a DICOM file/cine."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        frames = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in files]
        if not files or any(f is None for f in frames):
            raise ValueError(f"{path}: no readable images")
        return frames
    if path.suffix.lower() in VIDEO_SUFFIXES:
        video = cv2.VideoCapture(str(path))
        frames = []
        while True:
            ok, frame = video.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
        video.release()
        if not frames:
            raise ValueError(f"{path}: no frames could be decoded")
        return frames
    if path.suffix.lower() in DICOM_SUFFIXES or path.is_file():
        return read_dicom(path).frames
    raise ValueError(f"{path}: not a folder of images, a video or a DICOM file")


def flicker(inputs: list[np.ndarray], outputs: list[np.ndarray]) -> dict:
    """Frame-to-frame change of the outputs against that of the inputs (see the module docstring)."""
    if len(inputs) != len(outputs) or len(inputs) < 2:
        raise ValueError(f"need two equally long sequences of ≥ 2 frames, got {len(inputs)} and {len(outputs)}")
    d_in, d_out, static = [], [], []
    for t in range(1, len(inputs)):
        if outputs[t].shape != outputs[t - 1].shape or inputs[t].shape != inputs[t - 1].shape:
            raise ValueError(f"frame {t} changes size")
        din = float(np.mean(np.abs(inputs[t].astype(np.float32) - inputs[t - 1].astype(np.float32))))
        dout = float(np.mean(np.abs(outputs[t].astype(np.float32) - outputs[t - 1].astype(np.float32))))
        d_in.append(din)
        d_out.append(dout)
        if din == 0.0:
            static.append(dout)
    mean_in, mean_out = float(np.mean(d_in)), float(np.mean(d_out))
    return {"frames": len(inputs), "input_change": mean_in, "output_change": mean_out,
            "ratio": mean_out / mean_in if mean_in > 0 else (float("inf") if mean_out > 0 else 1.0),
            "static_pairs": len(static), "static_output_change": float(np.mean(static)) if static else None}


def write_video(frames: list[np.ndarray], path: str | Path, fps: float = 30.0) -> Path:
    """Write uint8 grayscale or BGR frames to an MP4 (mp4v) or AVI (MJPG) file people can play."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    fourcc = cv2.VideoWriter_fourcc(*("mp4v" if path.suffix.lower() == ".mp4" else "MJPG"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, (w, h))
    if not writer.isOpened():
        raise OSError(f"cannot write video {path}")
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame)
    writer.release()
    return path
