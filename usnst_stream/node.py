"""The stylization node: SUB → validate → engine → PUB, always on the newest frame.

Data path of one frame, top to bottom:

    receiver thread:  recv (zero-copy) → protocol.decode (validate) → stamp recv_ns → LatestSlot.put
    inference loop:   LatestSlot.take → frames.to_engine → engine.infer → frames.from_engine → stamp → send

The two stages meet in a one-frame mailbox. When inference is slower than the input, a newer frame
replaces the waiting one and the replaced frame is counted as *dropped*: the node never builds a backlog,
its memory is bounded (one pending frame plus small ZeroMQ high-water marks), and latency stays that of
one inference. Frames missing from the sequence numbers (lost in transport) are counted as *lost*.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import zmq

from usnst.engines.base import Engine
from usnst_io import protocol
from usnst_stream import frames
from usnst_stream.igtl_sink import IgtlSink, is_igtl
from usnst_stream.link_monitor import LinkMonitor
from usnst_stream.security import CurveConfig
from usnst_stream.sockets import (
    SIMULATOR_ENDPOINT,
    STYLIZED_ENDPOINT,
    attach,
    binding,
    connecting,
    split_endpoint,
)
from usnst_stream.stats import StreamStats

log = logging.getLogger(__name__)


@dataclass
class NodeConfig:
    input: str = connecting(SIMULATOR_ENDPOINT)  # where the simulator publishes
    output: str = binding(STYLIZED_ENDPOINT)  # where consumers subscribe
    input_topic: bytes = protocol.INPUT_TOPIC
    output_topic: bytes = protocol.OUTPUT_TOPIC
    limits: protocol.Limits = field(default_factory=protocol.Limits)
    stats_interval: float = 5.0  # seconds between stats lines; 0 for none
    rcvhwm: int = 4  # messages ZeroMQ may queue on input: small, the node wants the newest frame
    sndhwm: int = 16  # per subscriber: a slow consumer loses frames instead of growing our memory
    warmup: tuple[int, int] | None = (64, 64)  # one inference at start, so the first real frame is not slow
    curve: CurveConfig | None = None  # CURVE on both sockets: server where the node binds, client where it connects
    spacing_mm: tuple[float, float] | None = None  # (row, col) of frames whose meta gives none: sizes the grain
    # and the OpenIGTLink geometry, as the frame's own would
    igtl_spacing_mm: float = 1.0  # OpenIGTLink outputs: pixel spacing when neither the frame nor spacing_mm gives one
    metrics: str | None = None  # Prometheus endpoint: "PORT" (loopback) or "HOST:PORT"; None for none


class LatestSlot:
    """A mailbox holding at most one item; putting replaces (and reports) an item not yet taken."""

    def __init__(self):
        self._cond = threading.Condition()
        self._item = None

    def put(self, item) -> bool:
        with self._cond:
            replaced = self._item is not None
            self._item = item
            self._cond.notify()
            return replaced

    def take(self, timeout: float):
        with self._cond:
            if self._item is None:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item


class RateLimitedLog:
    """Logs the first event of each kind at once, then at most one line per ``interval`` with the count
    since, so a flood of bad frames cannot flood the log."""

    def __init__(self, interval: float = 5.0):
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, kind: str, message: str) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -1e9) >= self.interval:
            extra = self._suppressed.pop(kind, 0)
            log.warning("%s%s", message, f" (+{extra} more since last report)" if extra else "")
            self._last[kind] = now
        else:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1


class Node:
    """Runs ``engine`` on a frame stream. ``start()`` returns once both sockets are open."""

    def __init__(self, engine: Engine, config: NodeConfig = NodeConfig(), context: zmq.Context | None = None):
        self.engine = engine
        self.config = config
        self.context = context or zmq.Context.instance()
        self.stats = StreamStats()
        self.endpoints: dict[str, list[str]] = {}
        self._slot = LatestSlot()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._warn = RateLimitedLog()
        self._last_seq: tuple[int, int] | None = None  # (seq, recv_ns) of the last valid frame
        self._igtl: list[IgtlSink] = []
        self._metrics_server = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> "Node":
        if self.config.warmup:
            t0 = time.perf_counter()
            self.engine.infer(np.zeros(self.config.warmup, np.float32))
            self.engine.reset()  # the stream's first frame gets the noise a first frame gets (as in the Python API)
            log.info("engine warm-up %.0f ms", (time.perf_counter() - t0) * 1e3)
        sub = self.context.socket(zmq.SUB)
        sub.setsockopt(zmq.RCVHWM, self.config.rcvhwm)
        # Checked by libzmq per message part before it is buffered: a peer sending more is disconnected.
        sub.setsockopt(zmq.MAXMSGSIZE, self.config.limits.max_message_bytes())
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, self.config.input_topic)
        zmq_out = ",".join(e for e in self.config.output.split(",") if not is_igtl(e))
        pub = self.context.socket(zmq.PUB)
        pub.setsockopt(zmq.SNDHWM, self.config.sndhwm)
        pub.setsockopt(zmq.LINGER, 500)
        connects = [e for bind, e in (split_endpoint(one, False) for one in self.config.input.split(",")) if not bind]
        # Before connecting, so that no event is missed: libzmq abandons a connection after a protocol error, and a
        # refused CURVE handshake is otherwise silent on both sockets.
        link = LinkMonitor(sub, connects, self.config.limits.max_message_bytes(), self._input_link_event) \
            if connects or self.config.curve else None
        out_link = LinkMonitor(pub, [], 0, self._output_link_event) if self.config.curve else None
        try:
            self.endpoints["input"] = attach(sub, self.config.input, default_bind=False, curve=self.config.curve)
            self.endpoints["output"] = (attach(pub, zmq_out, default_bind=True, curve=self.config.curve)
                                        if zmq_out else [])
            for endpoint in (e for e in self.config.output.split(",") if is_igtl(e)):
                self._igtl.append(IgtlSink(endpoint, spacing_mm=self.config.spacing_mm
                                            or (self.config.igtl_spacing_mm,) * 2))
                self.endpoints["output"].append(self._igtl[-1].endpoint)
        except (zmq.ZMQError, ValueError, OSError):
            for watch in (link, out_link):
                if watch is not None:
                    watch.close()
            sub.close()
            pub.close()
            for sink in self._igtl:
                sink.close()
            raise
        if self.config.metrics:
            from usnst_stream.prometheus import serve_metrics

            self._metrics_server, url = serve_metrics(self, self.config.metrics)
            self.endpoints["metrics"] = [url]
            log.info("node: Prometheus metrics at %s", url)
        log.info("node: input %s, output %s, engine %s", ", ".join(self.endpoints["input"]),
                 ", ".join(self.endpoints["output"]), self.engine.describe())
        self._threads = [threading.Thread(target=self._receive_loop, args=(sub, link, out_link), name="usnst-recv", daemon=True),
                         threading.Thread(target=self._infer_loop, args=(pub,), name="usnst-infer", daemon=True)]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> dict:
        """Stop both loops, close the sockets and return the final stats snapshot."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None
        return self.stats.snapshot()

    def request_stop(self) -> None:
        """Ask the loops to finish; safe from a signal handler."""
        self._stop.set()

    def run(self, duration: float | None = None) -> dict:
        """Serve until ``request_stop()`` (e.g. from a signal handler) or for ``duration`` seconds, logging
        stats periodically; returns the final stats."""
        if not self._threads:
            self.start()
        interval = self.config.stats_interval if self.config.stats_interval > 0 else 0.5
        deadline = None if duration is None else time.monotonic() + duration
        while not self._stop.wait(interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic()))):
            if deadline is not None and time.monotonic() >= deadline:
                break
            if self.config.stats_interval > 0 and self.stats.snapshot()["received"] == 0:
                log.info("waiting for input on %s", ", ".join(self.endpoints["input"]))
            elif self.config.stats_interval > 0:
                log.info("%s", self.stats.interval_line())
        final = self.stop()
        log.info("final: %s", self.stats.summary_line())
        return final

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    # -- receiver thread: recv → validate → mailbox -----------------------------------------------
    def _receive_loop(self, sub: zmq.Socket, link: LinkMonitor | None, out_link: LinkMonitor | None) -> None:
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        watches = [w for w in (link, out_link) if w is not None]
        for watch in watches:
            poller.register(watch.poll_item, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(100))
                for watch in watches:
                    if watch.poll_item in ready:
                        watch.handle()
                    watch.repair()
                if sub not in ready:
                    continue
                parts = sub.recv_multipart(copy=False)
                recv_ns = protocol.now_ns()
                self.stats.count("received")
                frame = protocol.decode(parts, self.config.limits)
                if isinstance(frame, protocol.Rejected):
                    self.stats.reject(frame.reason)
                    self._warn.warn(frame.reason, f"rejected frame: {frame.detail}")
                    continue
                if not protocol.output_header_fits(frame):  # checked before inference: no work is wasted on it
                    self.stats.reject("header_size")
                    self._warn.warn("header_size", f"rejected frame {frame.seq}: its header leaves no room for the "
                                    f"node's timestamps within {protocol.MAX_HEADER_BYTES} bytes")
                    continue
                self._track_sequence(frame.seq, recv_ns)
                frame.stamps = {"recv_ns": recv_ns}
                if self._slot.put(frame):
                    self.stats.count("dropped")
        except Exception:  # a bug here must be loud, and must not leave the node looking alive
            log.exception("receiver stopped by an unexpected error")
            self._stop.set()
        finally:
            if link is not None:
                link.close()
            if out_link is not None:  # its socket's monitor: the socket itself belongs to the inference loop
                out_link.poll_item.close(linger=0)
            sub.close()

    def _input_link_event(self, reason: str, detail: str) -> None:
        """A connection the input lost to a protocol error (counted as a rejection) or a refused handshake."""
        self.stats.reject(reason)
        self._warn.warn(reason, f"input: {detail}")

    def _output_link_event(self, reason: str, detail: str) -> None:
        """A consumer refused at the output's handshake: logged and counted, not a rejected frame."""
        self.stats.count("refused_consumers")
        self._warn.warn("output_" + reason, f"output: {detail}")

    def _track_sequence(self, seq: int, recv_ns: int) -> None:
        if self._last_seq is not None:
            last, last_ns = self._last_seq
            lost = protocol.frames_lost(last, last_ns, seq, recv_ns)
            if lost is None:
                self._warn.warn("seq_jump", f"sequence jumped from {last} to {seq}, more frames than could have been "
                                "sent since the last one: counted as a renumbering, not as lost frames")
            elif lost:
                self.stats.count("lost", lost)
            elif seq <= last:
                self._warn.warn("seq_restart", f"sequence went from {last} to {seq}: the source restarted")
        self._last_seq = (seq, recv_ns)

    # -- inference loop: mailbox → engine → publish ----------------------------------------------
    def _infer_loop(self, pub: zmq.Socket) -> None:
        try:
            while not self._stop.is_set():
                frame = self._slot.take(timeout=0.1)
                if frame is not None:
                    self._process(frame, pub)
        except Exception:
            log.exception("inference loop stopped by an unexpected error")
            self._stop.set()
        finally:
            pub.close()
            for sink in self._igtl:
                sink.close()

    def _process(self, frame: protocol.Frame, pub: zmq.Socket) -> None:
        start_ns = protocol.now_ns()
        try:
            pose = protocol.image_to_world(frame.meta)
        except ValueError as exc:  # the frame is still good: stylized with its motion estimated, the pose counted
            pose = None
            self.stats.count("bad_poses")
            self._warn.warn("bad_pose", f"frame {frame.seq}: {exc}; its motion is estimated from the frames")
        try:
            spacing = protocol.spacing_mm(frame.meta) or self.config.spacing_mm
        except ValueError as exc:  # as a bad pose: the frame is stylized, its grain sized as for a frame without one
            spacing = self.config.spacing_mm
            self.stats.count("bad_spacing")
            self._warn.warn("bad_spacing", f"frame {frame.seq}: {exc}; its grain is sized as "
                            + ("--spacing-mm says" if spacing else "the model was fitted"))
        try:
            styled = self.engine.infer_at(frames.to_engine(frame.pixels), pose, spacing)
        except Exception as exc:  # one bad frame (e.g. out of memory on a huge frame) must not stop the stream
            self.stats.count("engine_errors")
            self._warn.warn("engine_error", f"engine failed on frame {frame.seq}: {exc.__class__.__name__}: {exc}")
            return
        end_ns = protocol.now_ns()
        out = protocol.Frame(frame.seq, frame.capture_ns, frames.from_engine(styled, frame.pixels), frame.meta,
                             {**frame.stamps, "infer_start_ns": start_ns, "infer_end_ns": end_ns},
                             self.config.output_topic)
        out.stamps["publish_ns"] = publish_ns = protocol.now_ns()
        pub.send_multipart(protocol.encode(out), copy=False)  # without zmq endpoints the PUB has no peers: no cost
        for sink in self._igtl:
            try:
                sink.send(out)
            except Exception as exc:  # a broken viewer connection must not stop the stream
                self.stats.count("output_errors")
                self._warn.warn("output_error", f"{sink.endpoint}: {exc.__class__.__name__}: {exc}")
        self.stats.count("published")
        self.stats.stamp(frame.stamps["recv_ns"], start_ns, end_ns, publish_ns)
