"""Conversions between wire pixels and the engine's float frames.

The engine sees one grayscale float32 (H, W) frame in [0, 1]; the wire carries uint8, uint16 or float32
with 1 or 3 channels. The node converts on the way in and back to the input's exact shape and dtype on
the way out, so a consumer gets frames it can display in place of the originals.
"""
from __future__ import annotations

import numpy as np

_SCALE = {"uint8": 255.0, "uint16": 65535.0}


def to_engine(pixels: np.ndarray) -> np.ndarray:
    """(H, W, C) wire pixels → float32 (H, W) in [0, 1]. Colour frames become their channel mean
    (scanner screenshots are grey rendered as RGB). Float frames are taken to be in [0, 1] already."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    name = pixels.dtype.name
    gray = pixels[:, :, 0] if pixels.shape[2] == 1 else pixels.mean(axis=2, dtype=np.float32)
    if name in _SCALE:
        return gray.astype(np.float32) * np.float32(1.0 / _SCALE[name])
    return np.clip(gray, 0.0, 1.0).astype(np.float32, copy=False)


def from_engine(gray: np.ndarray, like: np.ndarray) -> np.ndarray:
    """float32 (H, W) in [0, 1] → an array with the shape and dtype of ``like`` (the input pixels)."""
    name = like.dtype.name
    if name in _SCALE:
        out = np.rint(np.clip(gray, 0.0, 1.0) * _SCALE[name]).astype(like.dtype)
    else:
        out = np.clip(gray, 0.0, 1.0).astype(like.dtype)
    channels = like.shape[2] if like.ndim == 3 else 1
    if like.ndim == 2:
        return out
    return np.repeat(out[:, :, None], channels, axis=2) if channels > 1 else out[:, :, None]
