"""The usnst frame wire protocol, version 1 (docs/PROTOCOL.md is the normative text).

A frame is a ZeroMQ multipart message of exactly three parts:

    [topic bytes] [msgpack header map] [raw pixels, row-major (H, W, C), little-endian]

Decoding validates everything before it touches the pixels: a malformed message becomes a
``Rejected`` with a short machine-readable reason, never an exception that could stop the node.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

VERSION = 1
DTYPES = {"uint8": np.dtype("<u1"), "uint16": np.dtype("<u2"), "float32": np.dtype("<f4")}
CHANNELS = (1, 3)
INPUT_TOPIC = b"usnst/frame"
OUTPUT_TOPIC = b"usnst/stylized"
MAX_HEADER_BYTES = 64 * 1024
NODE_STAMPS = ("recv_ns", "infer_start_ns", "infer_end_ns", "publish_ns")
_REQUIRED = {"version": int, "seq": int, "capture_ns": int, "width": int, "height": int, "channels": int, "dtype": str}
_UINT64_MAX = 2**64 - 1
IMAGE_TO_WORLD = "image_to_world"  # the optional meta key of a frame's pose (docs/PROTOCOL.md)
SPACING_MM = "spacing_mm"  # the optional meta key of a frame's pixel spacing, [row_mm, column_mm]


@dataclass(frozen=True)
class Limits:
    """What a receiver accepts; checked before any pixel buffer is allocated or viewed."""

    max_width: int = 4096
    max_height: int = 4096

    def max_payload_bytes(self) -> int:
        return self.max_width * self.max_height * max(CHANNELS) * max(dt.itemsize for dt in DTYPES.values())

    def max_message_bytes(self) -> int:
        """For ZMQ_MAXMSGSIZE: the largest single part a valid frame can have."""
        return max(self.max_payload_bytes(), MAX_HEADER_BYTES)


@dataclass
class Frame:
    """A decoded, validated frame. ``pixels`` may be a zero-copy view of the received buffer."""

    seq: int
    capture_ns: int
    pixels: np.ndarray  # (H, W, C) with C in CHANNELS
    meta: dict = field(default_factory=dict)
    stamps: dict = field(default_factory=dict)  # node timestamps, present on output frames
    topic: bytes = INPUT_TOPIC

    @property
    def dtype_name(self) -> str:
        return self.pixels.dtype.name

    def header(self) -> dict:
        h, w, c = self.pixels.shape
        header: dict[str, Any] = {"version": VERSION, "seq": self.seq, "capture_ns": self.capture_ns,
                                  "width": w, "height": h, "channels": c, "dtype": self.dtype_name}
        if self.meta:
            header["meta"] = self.meta
        header.update(self.stamps)
        return header


@dataclass(frozen=True)
class Rejected:
    """Why a message was not a frame. ``reason`` is a stable key for counters; ``detail`` is for logs."""

    reason: str
    detail: str


def now_ns() -> int:
    """Wall-clock nanoseconds since the Unix epoch: comparable between processes on one machine."""
    return time.time_ns()


def encode(frame: Frame) -> list:
    """Multipart parts for ``frame``; the pixel part is the array's own buffer (send with copy=False)."""
    pixels = frame.pixels
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.dtype.name not in DTYPES:
        raise ValueError(f"unsupported dtype {pixels.dtype}; use one of {', '.join(DTYPES)}")
    pixels = np.ascontiguousarray(pixels, dtype=DTYPES[pixels.dtype.name])
    frame = Frame(frame.seq, frame.capture_ns, pixels, frame.meta, frame.stamps, frame.topic)
    return [frame.topic, msgpack.packb(frame.header(), use_bin_type=True), memoryview(pixels).cast("B")]


# A gap in seq counts as lost frames only if the sender could have sent them in the time since the previous frame at
# this rate (frames/s, far above any ultrasound frame rate), or if it is at most MIN_PLAUSIBLE_GAP. A larger jump is a
# sender that changed its numbering (one jump to 2⁶⁴−1 read as 1.8e19 lost frames).
MAX_PLAUSIBLE_FPS = 10_000
MIN_PLAUSIBLE_GAP = 1_000


def frames_lost(last_seq: int, last_ns: int, seq: int, now_ns: int) -> int | None:
    """Frames missing between two received sequence numbers: 0 for none (or a restart to a smaller number), the
    count for a plausible gap, None for a jump no sender could have made in the time between (a renumbering)."""
    gap = seq - last_seq - 1
    if gap <= 0:
        return 0
    plausible = max(MIN_PLAUSIBLE_GAP, (now_ns - last_ns) * MAX_PLAUSIBLE_FPS // 1_000_000_000)
    return gap if gap <= plausible else None


def output_header_fits(frame: Frame) -> bool:
    """Whether ``frame``'s header still fits the 64 KiB limit once a node adds its timestamps (at their largest): a
    node must not publish what the next receiver would reject."""
    header = frame.header()
    header.update(dict.fromkeys(NODE_STAMPS, _UINT64_MAX))
    return len(msgpack.packb(header, use_bin_type=True)) <= MAX_HEADER_BYTES


def restamp(parts: list, capture_ns: int | None = None) -> list:
    """The same message with ``capture_ns`` set (default: now), rewriting only the header part — for senders that
    stamp a frame the moment it goes onto the wire. Parts that are not a well-formed frame go unchanged (a replay
    sends a recording's malformed messages as they were)."""
    if len(parts) != 3:
        return parts
    try:
        header = msgpack.unpackb(bytes(parts[1]), raw=False)
    except (ValueError, msgpack.UnpackException):
        return parts
    if not isinstance(header, dict) or "capture_ns" not in header:
        return parts
    header["capture_ns"] = now_ns() if capture_ns is None else capture_ns
    return [parts[0], msgpack.packb(header, use_bin_type=True), parts[2]]


def image_to_world(meta: dict) -> np.ndarray | None:
    """The frame's pose, ``meta.image_to_world``: 16 numbers, a row-major 4×4 matrix taking a pixel's
    (column, row, 0, 1) to world millimetres (the convention of PLUS's ImageToReference), so it carries the pixel
    spacing too. None when the frame has none; ValueError when it has one that cannot be a pose. Not checked by
    ``decode``: ``meta`` is the sender's, and a frame with a bad pose is still a frame (the node counts the pose)."""
    given = meta.get(IMAGE_TO_WORLD)
    if given is None:
        return None
    if not isinstance(given, (list, tuple)) or len(given) != 16 \
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in given):
        raise ValueError(f"{IMAGE_TO_WORLD} must be 16 numbers (a row-major 4×4 matrix)")
    matrix = np.array(given, dtype=np.float64).reshape(4, 4)
    if not np.isfinite(matrix).all():
        raise ValueError(f"{IMAGE_TO_WORLD} holds NaN or infinity")
    if not np.allclose(matrix[3], [0, 0, 0, 1]):
        raise ValueError(f"{IMAGE_TO_WORLD}'s last row must be 0 0 0 1 (an affine map), got {matrix[3].tolist()}")
    column, row = matrix[:3, 0], matrix[:3, 1]
    if np.linalg.norm(np.cross(column, row)) <= 1e-9 * max(np.linalg.norm(column) * np.linalg.norm(row), 1e-300):
        raise ValueError(f"{IMAGE_TO_WORLD}'s column and row axes must span a plane")
    return matrix


def spacing_mm(meta: dict) -> tuple[float, float] | None:
    """The frame's pixel spacing, ``meta.spacing_mm``: (row, column) mm. None when the frame has none; ValueError
    when it is not two finite numbers above 0 (a NaN or a string would otherwise reach a viewer's geometry or the
    grain's size)."""
    given = meta.get(SPACING_MM)
    if given is None:
        return None
    if not (isinstance(given, (list, tuple)) and len(given) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                    for v in given)):
        raise ValueError(f"{SPACING_MM} must be two finite numbers of mm above 0 (row, column), got {given!r}")
    return float(given[0]), float(given[1])


def _check_header(header: Any, limits: Limits) -> Rejected | None:
    if not isinstance(header, dict):
        return Rejected("header_type", f"header is a {type(header).__name__}, not a map")
    for key, typ in _REQUIRED.items():
        if key not in header:
            return Rejected("missing_field", f"header has no '{key}'")
        value = header[key]
        if not isinstance(value, typ) or isinstance(value, bool):
            return Rejected("field_type", f"'{key}' is {type(value).__name__}, expected {typ.__name__}")
    if header["version"] != VERSION:
        return Rejected("version", f"protocol version {header['version']} is not supported (this node speaks {VERSION})")
    if not 0 <= header["seq"] <= _UINT64_MAX or not 0 <= header["capture_ns"] <= _UINT64_MAX:
        return Rejected("field_range", "seq and capture_ns must be unsigned 64-bit integers")
    if header["dtype"] not in DTYPES:
        return Rejected("dtype", f"dtype {header['dtype']!r} is not one of {', '.join(DTYPES)}")
    if header["channels"] not in CHANNELS:
        return Rejected("channels", f"channels={header['channels']} (supported: {CHANNELS})")
    w, h = header["width"], header["height"]
    if not (1 <= w <= limits.max_width and 1 <= h <= limits.max_height):
        return Rejected("dimensions", f"{w}×{h} outside 1…{limits.max_width}×1…{limits.max_height}")
    if "meta" in header and not isinstance(header["meta"], dict):
        return Rejected("field_type", "'meta' must be a map")
    return None


def decode(parts: list, limits: Limits = Limits(), check_finite: bool = True) -> Frame | Rejected:
    """Validate and decode a received multipart message. Parts may be bytes or zmq.Frame objects;
    with zmq.Frame the returned pixels are a view of the received buffer, not a copy."""
    if len(parts) != 3:
        return Rejected("parts", f"{len(parts)} message parts, expected 3 (topic, header, pixels)")
    topic, raw_header, payload = (_buffer(p) for p in parts)
    if len(raw_header) > MAX_HEADER_BYTES:
        return Rejected("header_size", f"header of {len(raw_header)} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        header = msgpack.unpackb(raw_header, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for malformed input
        return Rejected("header_decode", f"header is not valid msgpack: {exc.__class__.__name__}")
    problem = _check_header(header, limits)
    if problem:
        return problem
    dtype = DTYPES[header["dtype"]]
    shape = (header["height"], header["width"], header["channels"])
    expected = shape[0] * shape[1] * shape[2] * dtype.itemsize
    if len(payload) != expected:
        return Rejected("payload_size", f"payload is {len(payload)} bytes, header implies {expected}")
    pixels = np.frombuffer(payload, dtype=dtype).reshape(shape)
    if check_finite and dtype.kind == "f" and not np.isfinite(pixels).all():
        return Rejected("non_finite", "float frame contains NaN or infinity")
    stamps = {k: header[k] for k in NODE_STAMPS if isinstance(header.get(k), int)}
    return Frame(header["seq"], header["capture_ns"], pixels, header.get("meta", {}), stamps, bytes(topic))


def _buffer(part) -> memoryview:
    """bytes, bytearray, memoryview or zmq.Frame → memoryview, without copying."""
    buf = getattr(part, "buffer", part)
    return memoryview(buf)
