"""Limits on what an untrusted file may make usnst allocate: pixels an image header announces, bytes a sequence decodes
to, and the sizes a stored network or stage config asks for. Checked before the allocation, refused in one line.

A 388 KB PNG can announce 2–4 GB of pixels, a checkpoint config ``channels: 100000`` 40 GB of weights and a stage
setting terabytes of noise planes: none of that is an ultrasound frame or a trained usnst model. The image limits are
settings (environment variables, for batch jobs over huge stills); the config ranges are what the architectures mean.
"""
from __future__ import annotations

import math
import os
from dataclasses import fields

DEFAULT_MAX_IMAGE_PIXELS = 8192 * 8192  # one frame or still; scanner screenshots and 4K video frames fit many times
DEFAULT_MAX_DECODED_BYTES = 4 << 30  # one whole sequence (a DICOM cine) decoded to 8-bit grey


class TooLarge(ValueError):
    """An input asks for more memory than the limits allow; the message names the limit and how to raise it."""


def _setting(name: str, default: int) -> int:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"${name} must be a whole number, got {text!r}") from None
    if value < 1:
        raise ValueError(f"${name} must be at least 1, got {value}")
    return value


def max_image_pixels() -> int:
    return _setting("USNST_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS)


def max_decoded_bytes() -> int:
    return _setting("USNST_MAX_DECODED_BYTES", DEFAULT_MAX_DECODED_BYTES)


def check_image(width: int, height: int, what: str, frames: int = 1, bytes_per_pixel: int = 1) -> None:
    """Refuse an image (or ``frames`` of them) whose header announces more pixels than the limits allow."""
    pixels = int(width) * int(height)
    if pixels > max_image_pixels():
        raise TooLarge(f"{what}: {width}x{height} is {pixels:,} pixels per frame, over the limit of "
                       f"{max_image_pixels():,} (set USNST_MAX_IMAGE_PIXELS to allow more)")
    total = pixels * max(1, int(frames)) * max(1, int(bytes_per_pixel))
    if total > max_decoded_bytes():
        raise TooLarge(f"{what}: {frames} frames of {width}x{height} decode to {total:,} bytes, over the limit of "
                       f"{max_decoded_bytes():,} (set USNST_MAX_DECODED_BYTES to allow more)")


def check_config(config, ranges: dict[str, tuple]) -> None:
    """Each field of a (frozen) config dataclass has its declared type and, where ``ranges`` names it, lies in
    [low, high] (numbers) or among the given choices (strings). Called from ``__post_init__``: a config read from a
    file is checked before a single weight is allocated."""
    for f in fields(config):
        value = getattr(config, f.name)
        kind = {"int": int, "bool": bool, "float": float, "str": str}.get(str(f.type), None)
        if kind is bool and not isinstance(value, bool):
            raise TypeError(f"{type(config).__name__}.{f.name} must be true or false, got {value!r}")
        if kind is int and (not isinstance(value, int) or isinstance(value, bool)):
            raise TypeError(f"{type(config).__name__}.{f.name} must be a whole number, got {value!r}")
        if kind is float and (not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)):
            raise TypeError(f"{type(config).__name__}.{f.name} must be a finite number, got {value!r}")
        if kind is str and not isinstance(value, str):
            raise TypeError(f"{type(config).__name__}.{f.name} must be text, got {value!r}")
        allowed = ranges.get(f.name)
        if allowed is None:
            continue
        if kind is str:
            if value not in allowed:
                raise ValueError(f"{type(config).__name__}.{f.name} must be one of {', '.join(allowed)}, got {value!r}")
        elif not allowed[0] <= value <= allowed[1]:
            raise ValueError(f"{type(config).__name__}.{f.name} must lie in {allowed[0]}…{allowed[1]}, got {value!r}")
