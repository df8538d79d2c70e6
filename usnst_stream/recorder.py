"""`usnst record`: subscribe to a stream and append every message to a recording file (usnst_io.recording), counting
frames missing from the sequence numbers (e.g. while the publisher was down)."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import zmq

from usnst_io import protocol
from usnst_io.recording import RecordingWriter
from usnst_stream.sockets import attach


def record(endpoint: str, path: str | os.PathLike, stop=None, frames: int | None = None,
           duration: float | None = None, topic: bytes = b"", context=None, ready=None, curve=None,
           overwrite: bool = False) -> dict:
    """Subscribe to ``endpoint`` and append every message to a recording until ``stop`` is set, ``frames``
    messages were written or ``duration`` seconds passed. Returns counts, including frames missing from the
    sequence numbers (e.g. while the publisher was down)."""
    stop = stop or threading.Event()
    writer = RecordingWriter(path, overwrite)  # refused before anything is subscribed, if the file exists
    sock = (context or zmq.Context.instance()).socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, topic)
    sock.setsockopt(zmq.RCVHWM, 1000)  # a recorder wants every frame; a deep queue absorbs disk hiccups
    sock.setsockopt(zmq.LINGER, 0)
    try:
        attach(sock, endpoint, default_bind=False, curve=curve)
    except (zmq.ZMQError, ValueError):
        sock.close(0)
        writer.close()
        Path(path).unlink(missing_ok=True)  # made a moment ago, empty
        raise
    if ready is not None:
        ready.set()
    deadline = None if duration is None else time.monotonic() + duration
    last_seq, missing, invalid = None, 0, 0
    try:
        with writer:
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
                now = protocol.now_ns()
                if last_seq is not None:
                    missing += protocol.frames_lost(*last_seq, frame.seq, now) or 0  # a renumbering loses nothing
                last_seq = (frame.seq, now)
            written = writer.count
    finally:
        sock.close()
    return {"written": written, "missing_by_seq": missing, "invalid": invalid, "path": str(path)}
