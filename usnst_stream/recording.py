"""Stream recordings: a small framed file format that survives a crash mid-write (docs/PROTOCOL.md §Recordings).

    file   = header record*
    header = b"USNSTREC" u16 version(=1) u16 flags(=0) u32 reserved(=0)              (16 bytes)
    record = b"UREC" u32 body_length u32 crc32(body) body
    body   = u64 recv_ns u16 n_parts (u32 part_length, part bytes){n_parts}

All integers little-endian. Each record holds one multipart ZeroMQ message exactly as received, so
a replay sends the very same bytes. A reader stops at the first record that is short or fails its
checksum and reports where: a file cut off by a crash replays up to its last whole frame.
"""
from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

log = logging.getLogger(__name__)

MAGIC = b"USNSTREC"
VERSION = 1
_FILE_HEADER = struct.Struct("<8sHHI")
_RECORD_HEAD = struct.Struct("<4sII")
_RECORD_MAGIC = b"UREC"
_BODY_HEAD = struct.Struct("<QH")
_PART_LEN = struct.Struct("<I")
MAX_RECORD_BYTES = 1 << 30  # refuse to allocate for a corrupted length field


class RecordingError(ValueError):
    """The file is not a usnst recording at all (bad magic or unknown version)."""


@dataclass
class Message:
    recv_ns: int
    parts: list[bytes]


class RecordingWriter:
    """Appends messages; each record is flushed to the OS as soon as it is written, so a crash of this
    process loses at most the record being written."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: BinaryIO = open(self.path, "wb")
        self._f.write(_FILE_HEADER.pack(MAGIC, VERSION, 0, 0))
        self._f.flush()
        self.count = 0

    def write(self, recv_ns: int, parts: list) -> None:
        chunks = [_BODY_HEAD.pack(recv_ns, len(parts))]
        for p in parts:
            b = bytes(getattr(p, "buffer", p))
            chunks += [_PART_LEN.pack(len(b)), b]
        body = b"".join(chunks)
        self._f.write(_RECORD_HEAD.pack(_RECORD_MAGIC, len(body), zlib.crc32(body)) + body)
        self._f.flush()
        self.count += 1

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RecordingReader:
    """Iterates the whole records of a file. After iteration ``status`` says how the file ended:
    'complete', or why reading stopped and at which byte offset."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.status = "not read"
        self.count = 0
        with open(self.path, "rb") as f:
            head = f.read(_FILE_HEADER.size)
        if len(head) < _FILE_HEADER.size or head[:8] != MAGIC:
            raise RecordingError(f"{self.path} is not a usnst recording (no {MAGIC.decode()} header)")
        _, version, _, _ = _FILE_HEADER.unpack(head)
        if version != VERSION:
            raise RecordingError(f"{self.path} is recording format version {version}; this usnst reads {VERSION}")

    def __iter__(self) -> Iterator[Message]:
        self.count = 0
        with open(self.path, "rb") as f:
            f.seek(_FILE_HEADER.size)
            while True:
                offset = f.tell()
                head = f.read(_RECORD_HEAD.size)
                if not head:
                    self.status = "complete"
                    return
                if len(head) < _RECORD_HEAD.size:
                    self.status = f"truncated at byte {offset} (partial record header) after {self.count} messages"
                    break
                magic, length, crc = _RECORD_HEAD.unpack(head)
                if magic != _RECORD_MAGIC or length > MAX_RECORD_BYTES:
                    self.status = f"corrupt record at byte {offset} after {self.count} messages"
                    break
                body = f.read(length)
                if len(body) < length:
                    self.status = f"truncated at byte {offset} (partial record) after {self.count} messages"
                    break
                if zlib.crc32(body) != crc:
                    self.status = f"checksum mismatch at byte {offset} after {self.count} messages"
                    break
                message = _parse_body(body)
                if message is None:
                    self.status = f"malformed record body at byte {offset} after {self.count} messages"
                    break
                self.count += 1
                yield message
        log.warning("%s: %s; replaying the %d whole messages before it", self.path, self.status, self.count)


def _parse_body(body: bytes) -> Message | None:
    if len(body) < _BODY_HEAD.size:
        return None
    recv_ns, n = _BODY_HEAD.unpack_from(body)
    pos, parts = _BODY_HEAD.size, []
    for _ in range(n):
        if pos + _PART_LEN.size > len(body):
            return None
        (length,) = _PART_LEN.unpack_from(body, pos)
        pos += _PART_LEN.size
        if pos + length > len(body):
            return None
        parts.append(body[pos:pos + length])
        pos += length
    return Message(recv_ns, parts) if pos == len(body) else None


def record(endpoint: str, path: str | os.PathLike, stop=None, frames: int | None = None,
           duration: float | None = None, topic: bytes = b"", context=None, ready=None, curve=None) -> dict:
    """Subscribe to ``endpoint`` and append every message to a recording until ``stop`` is set, ``frames``
    messages were written or ``duration`` seconds passed. Returns counts, including frames missing from the
    sequence numbers (e.g. while the publisher was down)."""
    import threading
    import time

    import zmq

    from usnst_stream import protocol
    from usnst_stream.sockets import attach

    stop = stop or threading.Event()
    sock = (context or zmq.Context.instance()).socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, topic)
    sock.setsockopt(zmq.RCVHWM, 1000)  # a recorder wants every frame; a deep queue absorbs disk hiccups
    sock.setsockopt(zmq.LINGER, 0)
    try:
        attach(sock, endpoint, default_bind=False, curve=curve)
    except (zmq.ZMQError, ValueError):
        sock.close(0)
        raise
    if ready is not None:
        ready.set()
    deadline = None if duration is None else time.monotonic() + duration
    last_seq, missing, invalid = None, 0, 0
    try:
        with RecordingWriter(path) as writer:
            while not stop.is_set() and (frames is None or writer.count < frames):
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if not sock.poll(100):
                    continue
                parts = sock.recv_multipart(copy=False)
                writer.write(protocol.now_ns(), parts)
                frame = protocol.decode(parts, check_finite=False)
                if isinstance(frame, protocol.Rejected):
                    invalid += 1
                    continue
                if last_seq is not None and frame.seq > last_seq + 1:
                    missing += frame.seq - last_seq - 1
                last_seq = frame.seq
            written = writer.count
    finally:
        sock.close()
    return {"written": written, "missing_by_seq": missing, "invalid": invalid, "path": str(path)}
