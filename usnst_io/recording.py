"""Stream recordings: a small framed file format that survives a crash mid-write (docs/PROTOCOL.md §Recordings).

    file   = header record*
    header = b"USNSTREC" u16 version(=1) u16 flags(=0) u32 reserved(=0)              (16 bytes)
    record = b"UREC" u32 body_length u32 crc32(body) body
    body   = u64 recv_ns u16 n_parts (u32 part_length, part bytes){n_parts}

All integers little-endian. Each record holds one multipart ZeroMQ message exactly as received, so
a replay sends the very same bytes. A reader skips a record that is short or fails its checksum, finds the next
whole record and reports what it skipped: a file cut off by a crash replays up to its last whole frame, and one
flipped bit costs one frame, not the rest of the file.
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
    process loses at most the record being written. An existing file is refused unless ``overwrite``: a recording
    is often the only copy of a session."""

    def __init__(self, path: str | os.PathLike, overwrite: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._f: BinaryIO = open(self.path, "wb" if overwrite else "xb")
        except FileExistsError:
            raise RecordingError(f"{self.path} exists: choose another --out, or pass --overwrite to replace it") \
                from None
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
    """Iterates the whole records of a file. A damaged stretch (a flipped bit, a torn write) costs only the records it
    touches: the reader searches forward for the next record that passes its checksum and goes on from there.
    After iteration ``status`` is 'complete', or says what was skipped and where; ``damaged`` counts the stretches
    skipped (a file cut off at its end by a crash is ``truncated``, not damaged: nothing after it was lost)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.status = "not read"
        self.count = 0
        self.damaged = 0
        self.truncated = False
        with open(self.path, "rb") as f:
            head = f.read(_FILE_HEADER.size)
        if len(head) < _FILE_HEADER.size or head[:8] != MAGIC:
            raise RecordingError(f"{self.path} is not a usnst recording (no {MAGIC.decode()} header)")
        _, version, _, _ = _FILE_HEADER.unpack(head)
        if version != VERSION:
            raise RecordingError(f"{self.path} is recording format version {version}; this usnst reads {VERSION}")

    def __iter__(self) -> Iterator[Message]:
        self.count, self.damaged, self.truncated = 0, 0, False
        problems = []
        size = os.path.getsize(self.path)
        with open(self.path, "rb") as f:
            offset, bad_at, bad_why = _FILE_HEADER.size, None, ""
            while offset < size:
                message, end, problem = _read_record(f, offset, size)
                if message is not None:
                    if bad_at is not None:  # the damaged stretch ends here
                        self.damaged += 1
                        problems.append(f"{bad_why} at byte {bad_at}: skipped {offset - bad_at} bytes")
                        bad_at = None
                    self.count += 1
                    yield message
                    offset = end
                    continue
                if bad_at is None:
                    bad_at, bad_why = offset, problem
                following = _next_magic(f, offset + 1)
                if following is None:  # nothing whole after it: the file's tail
                    self.truncated = True
                    problems.append(f"{bad_why} at byte {bad_at}: the last {size - bad_at} bytes are not a whole "
                                    "record (truncated)")
                    break
                offset = following
        self.status = "complete" if not problems else "; ".join(problems) + f" ({self.count} whole messages read)"
        if problems:
            log.warning("%s: %s", self.path, self.status)


def _read_record(f: BinaryIO, offset: int, size: int) -> tuple[Message | None, int, str]:
    """The record at ``offset``: (message, offset after it, '') or (None, offset, what is wrong with it)."""
    f.seek(offset)
    head = f.read(_RECORD_HEAD.size)
    if len(head) < _RECORD_HEAD.size:
        return None, offset, "a partial record header"
    magic, length, crc = _RECORD_HEAD.unpack(head)
    if magic != _RECORD_MAGIC or length > MAX_RECORD_BYTES:
        return None, offset, "a corrupt record header"
    if offset + _RECORD_HEAD.size + length > size:
        return None, offset, "a partial record"
    body = f.read(length)
    if zlib.crc32(body) != crc:
        return None, offset, "a checksum mismatch"
    message = _parse_body(body)
    if message is None:
        return None, offset, "a malformed record body"
    return message, offset + _RECORD_HEAD.size + length, ""


def _next_magic(f: BinaryIO, start: int, chunk: int = 1 << 20) -> int | None:
    """Offset of the next record marker at or after ``start`` (read in chunks: recordings can be gigabytes)."""
    f.seek(start)
    carry, position = b"", start
    while True:
        data = f.read(chunk)
        if not data:
            return None
        window = carry + data
        found = window.find(_RECORD_MAGIC)
        if found >= 0:
            return position - len(carry) + found
        carry = window[-(len(_RECORD_MAGIC) - 1):]
        position += len(data)


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


def is_recording(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts with the recording header (any suffix)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False
