"""`usnst view`: the simulator's frames and their stylized versions side by side, live or from a recording, with a
stats overlay.

It subscribes to both streams and pairs frames by sequence number, so the two panels always show the same
moment. Output goes to a window (Tk, from the standard library: usnst_stream.window) and/or to a video
file (works headless, e.g. to show a run to someone later).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

import cv2
import numpy as np
import zmq

from usnst_io import protocol
from usnst_io.media import TimedVideoWriter, gray_uint8
from usnst_stream.security import CurveConfig
from usnst_stream.sockets import (
    SIMULATOR_ENDPOINT,
    STYLIZED_ENDPOINT,
    attach,
    connecting,
)
from usnst_stream.window import TkWindow

log = logging.getLogger(__name__)

WINDOW = "usnst view (q or Esc to quit)"


@dataclass
class ViewConfig:
    input: str = connecting(SIMULATOR_ENDPOINT)  # the simulator's stream
    styled: str = connecting(STYLIZED_ENDPOINT)  # the node's output
    window: bool = True
    out: str | None = None  # video file (.mp4 / .avi)
    fps: float = 30.0  # of the video file
    frames: int | None = None  # stop after this many stylized frames
    duration: float | None = None
    curve: CurveConfig | None = None  # CURVE client on both subscriptions (each names its server's public key)


def to_display(pixels: np.ndarray) -> np.ndarray:
    """Any wire frame (H, W, C) → 8-bit BGR for display (colour frames keep their colour)."""
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        return np.ascontiguousarray(np.stack([gray_uint8(pixels[:, :, c]) for c in (2, 1, 0)], axis=2))
    return cv2.cvtColor(np.ascontiguousarray(gray_uint8(pixels)), cv2.COLOR_GRAY2BGR)


def compose(original: np.ndarray | None, styled: np.ndarray, lines: list[str], pair: bool = True) -> np.ndarray:
    """input | stylized (``pair``: a black placeholder while an input is missing), or the one stream alone, with the
    stats lines drawn on a strip below."""
    right = to_display(styled)
    if pair:
        left = to_display(original) if original is not None else np.zeros_like(right)
        if left.shape != right.shape:
            left = cv2.resize(left, (right.shape[1], right.shape[0]))
        panels = np.concatenate([left, right], axis=1)
    else:
        panels = right
    strip = np.zeros((18 * len(lines) + 8, panels.shape[1], 3), np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(strip, line, (6, 18 * i + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 220, 255), 1, cv2.LINE_AA)
    return np.concatenate([panels, strip], axis=0)


class Viewer:
    def __init__(self, cfg: ViewConfig, context: zmq.Context | None = None, live: bool = True):
        """``live``: subscribe to cfg.input and cfg.styled (``run``); False for ``play``ing a recording."""
        if not cfg.window and not cfg.out:
            raise ValueError("nothing to show: use the window, or --out FILE.mp4 (or both)")
        self.window = TkWindow(WINDOW) if cfg.window else None
        self.cfg = cfg
        ctx = context or zmq.Context.instance()
        self.sockets = []
        for spec, topic in ((cfg.input, protocol.INPUT_TOPIC), (cfg.styled, protocol.OUTPUT_TOPIC)) if live else ():
            sock = ctx.socket(zmq.SUB)
            sock.setsockopt(zmq.SUBSCRIBE, topic)
            sock.setsockopt(zmq.RCVHWM, 64)
            sock.setsockopt(zmq.LINGER, 0)
            attach(sock, spec, default_bind=False, curve=cfg.curve)
            self.sockets.append(sock)
        self.originals: OrderedDict[int, np.ndarray] = OrderedDict()
        self.arrivals: deque[float] = deque(maxlen=60)
        self.latency: deque[float] = deque(maxlen=120)
        self.shown = self.unpaired = 0
        self.pair = True  # False for a recording of one stream: no input panel to show
        # Frames go into the file at the time they arrived, so the video lasts as long as the session did.
        self.writer = TimedVideoWriter(self.cfg.out, self.cfg.fps) if self.cfg.out else None

    def _stats_lines(self, frame: protocol.Frame) -> list[str]:
        fps = (len(self.arrivals) - 1) / (self.arrivals[-1] - self.arrivals[0]) if len(self.arrivals) > 1 else 0.0
        lat = np.percentile(self.latency, [50, 99]) if self.latency else [float("nan")] * 2
        infer = (frame.stamps.get("infer_end_ns", 0) - frame.stamps.get("infer_start_ns", 0)) / 1e6
        return [f"seq {frame.seq}   stylized {fps:.1f} fps   inference {infer:.1f} ms",
                f"capture -> here p50 {lat[0]:.1f} ms  p99 {lat[1]:.1f} ms   unpaired {self.unpaired}"]

    def _on_styled(self, frame: protocol.Frame, now: float | None = None, latency_ms: float | None = None) -> bool:
        """Show one stylized frame beside its input; ``now`` and ``latency_ms`` default to the live values (a
        recording supplies its own: receive time, and receive time − capture time)."""
        now = time.monotonic() if now is None else now
        self.arrivals.append(now)
        self.latency.append((protocol.now_ns() - frame.capture_ns) / 1e6 if latency_ms is None else latency_ms)
        original = self.originals.pop(frame.seq, None)
        if original is None and self.pair:
            self.unpaired += 1
        picture = compose(original, frame.pixels, self._stats_lines(frame), self.pair)
        self.shown += 1
        if self.writer is not None:
            self.writer.add(now, picture)
        if self.window is not None and not self.window.show(picture):
            return False
        return True

    def play(self, path: str, stop: threading.Event | None = None) -> dict:
        """A recording instead of live streams, at its recorded pace: output-topic frames are paired with the
        input-topic frames of the same seq (a recording of both streams); a recording of one stream shows its
        frames on the right. The video file gets the recorded timing."""
        from usnst_io.recording import RecordingReader

        stop = stop or threading.Event()
        messages = [(m.recv_ns, protocol.decode(m.parts)) for m in RecordingReader(path)]
        frames = [(t, f) for t, f in messages if isinstance(f, protocol.Frame)]
        if not frames:
            raise ValueError(f"{path}: no frames to show")
        both = any(f.topic == protocol.INPUT_TOPIC for _, f in frames) and \
            any(f.topic == protocol.OUTPUT_TOPIC for _, f in frames)
        self.pair = both  # one stream: shown alone, not beside a black half
        start, t0 = time.monotonic(), frames[0][0]
        try:
            for recv_ns, frame in frames:
                if stop.is_set() or (self.cfg.frames is not None and self.shown >= self.cfg.frames):
                    break
                t = (recv_ns - t0) / 1e9
                if self.cfg.window and stop.wait(max(0.0, start + t - time.monotonic())):
                    break
                if both and frame.topic == protocol.INPUT_TOPIC:
                    self.originals[frame.seq] = frame.pixels
                elif not self._on_styled(frame, t, (recv_ns - frame.capture_ns) / 1e6):
                    break
        finally:
            self._close()
        return self._result()

    def _close(self) -> None:
        for sock in self.sockets:
            sock.close()
        if self.writer is not None:
            self.writer.close()
        if self.window is not None:
            self.window.close()

    def _result(self) -> dict:
        return {"shown": self.shown, "unpaired": self.unpaired, "video": self.cfg.out,
                "video_frames": self.writer.written if self.writer is not None else 0}

    def run(self, stop: threading.Event | None = None) -> dict:
        stop = stop or threading.Event()
        poller = zmq.Poller()
        for sock in self.sockets:
            poller.register(sock, zmq.POLLIN)
        deadline = None if self.cfg.duration is None else time.monotonic() + self.cfg.duration
        going = True
        try:
            while going and not stop.is_set() and (self.cfg.frames is None or self.shown < self.cfg.frames):
                if deadline is not None and time.monotonic() >= deadline:
                    break
                for sock, _ in poller.poll(100):
                    frame = protocol.decode(sock.recv_multipart())
                    if not isinstance(frame, protocol.Frame):
                        continue  # the node counts bad input; a viewer just skips it
                    if sock is self.sockets[0]:
                        self.originals[frame.seq] = frame.pixels
                        while len(self.originals) > 64:
                            self.originals.popitem(last=False)
                    elif not self._on_styled(frame):
                        going = False
                        break
        finally:
            self._close()
        return self._result()
