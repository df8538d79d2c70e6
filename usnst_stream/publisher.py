"""Publishing a source's messages on a PUB socket at the source's own pace."""
from __future__ import annotations

import logging
import threading
import time
from typing import Iterable

import zmq

from usnst_io import protocol
from usnst_stream.security import CurveConfig
from usnst_stream.sockets import attach

log = logging.getLogger(__name__)


def open_publisher(endpoint: str, context: zmq.Context | None = None, sndhwm: int = 16,
                   curve: CurveConfig | None = None) -> tuple[zmq.Socket, list[str]]:
    sock = (context or zmq.Context.instance()).socket(zmq.PUB)
    sock.setsockopt(zmq.SNDHWM, sndhwm)
    sock.setsockopt(zmq.LINGER, 500)
    try:
        return sock, attach(sock, endpoint, default_bind=True, curve=curve)
    except (zmq.ZMQError, ValueError):
        sock.close(0)
        raise


def publish(source: Iterable[tuple[float, list]], sock: zmq.Socket, stop: threading.Event | None = None,
            speed: float = 1.0, stamp: bool = False) -> dict:
    """Send each message when its time comes (t / speed after the first). A slow source or a busy machine
    makes frames late, never bunched: a late frame goes at once and the schedule is not caught up by bursts
    of more than one frame. With ``stamp`` each frame's capture_ns is set as it is sent (a source makes its frames
    ahead of their time; stamped then, consumers would see a frame period of latency that is not there); without,
    messages go byte for byte (a recording replayed as recorded). Returns counts: sent, late (sent more than 5 ms
    after their time)."""
    stop = stop or threading.Event()
    start = None
    sent = late = 0
    for t, parts in source:
        if stop.is_set():
            break
        now = time.monotonic()
        if start is None:
            start = now - t / speed
        due = start + t / speed
        if due > now:
            if stop.wait(due - now):
                break
        elif now - due > 0.005:
            late += 1
            # Re-anchor so a stall is not followed by a burst that would flood the receiver.
            start = now - t / speed
        sock.send_multipart(protocol.restamp(parts) if stamp else parts, copy=False)
        sent += 1
    return {"sent": sent, "late": late}
