"""`usnst demo`: simulator → node → consumer on loopback, end to end, with a picture to look at.

Everything runs in this process (three threads) but talks over real ZeroMQ sockets, exactly as separate
processes would; the consumer measures end-to-end latency from the simulator's capture timestamp.
"""
from __future__ import annotations

import itertools
import logging
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import zmq
import zmq.auth

from usnst.engines.base import EngineOptions
from usnst.engines.registry import AUTO, load_engine
from usnst_io import protocol
from usnst_io.media import to_uint8, write_png
from usnst_stream.node import Node, NodeConfig
from usnst_stream.publisher import open_publisher, publish
from usnst_stream.security import CurveConfig, generate_keys
from usnst_stream.sockets import loopback_endpoints
from usnst_stream.sources import SENDS, limited, phantom_stream
from usnst_stream.stats import LatencyWindow

log = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    seconds: float = 6.0
    fps: float = 15.0
    height: int = 256
    width: int = 256
    model: str | None = None  # None: the embedded default (engines.checkpoint.DEFAULT_MODEL)
    backend: str = AUTO  # the fastest backend that runs here, timed at start
    threads: int | None = None  # inference threads; None: the runtime's
    loop_seconds: float = 4.0  # the simulator pre-renders this much and loops it (0: renders live)
    transport: str = "tcp"  # or "ipc"
    out: str = "usnst-demo.png"
    seed: int = 0
    curve: bool = False  # both links encrypted and authenticated, with key pairs made for this run
    probe: str | None = None  # the phantom's probe kind (usnst_stream.phantom.PROBES); None: its original sector
    formation: str = "gaussian"  # how the phantom forms its frames (phantom.FORMATIONS)
    anatomy: str = "fetal"  # what it shows (phantom.ANATOMIES)
    sends: str = SENDS[0]  # what each frame tells the node of its geometry (sources.SENDS)


def _demo_keys(folder: Path) -> tuple[CurveConfig, CurveConfig, tuple[bytes, bytes, bytes]]:
    """Key pairs for the simulator, the node and the consumer, each allow-list holding its one client: the demo's
    three parties as `usnst keys` would set them up. Returns the simulator's and node's configs and the consumer's
    (public, secret, server public) keys."""
    made = {name: generate_keys(folder, name) for name in ("simulator", "node", "consumer")}
    for server, client in (("simulator", "node"), ("node", "consumer")):
        allow = folder / f"{server}-allows"
        allow.mkdir()
        (allow / f"{client}.key").write_bytes(made[client][0].read_bytes())
    sim = CurveConfig(str(made["simulator"][1]), allow_dir=str(folder / "simulator-allows"))
    node = CurveConfig(str(made["node"][1]), allow_dir=str(folder / "node-allows"), server_key=str(made["simulator"][0]))
    public, secret = zmq.auth.load_certificate(made["consumer"][1])
    return sim, node, (public, secret, zmq.auth.load_certificate(made["node"][0])[0])


CONSUMER_STAGES = ("to_node", "wait", "infer", "publish", "to_consumer")


class Consumer:
    """Subscribes to stylized frames and measures what a display would experience."""

    def __init__(self, endpoint: str, context: zmq.Context, curve_keys: tuple[bytes, bytes, bytes] | None = None):
        self.sock = context.socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, protocol.OUTPUT_TOPIC)
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve_keys is not None:  # (public, secret, the node's public key)
            self.sock.curve_publickey, self.sock.curve_secretkey, self.sock.curve_serverkey = curve_keys
        self.sock.connect(endpoint)
        self.end_to_end = LatencyWindow(100_000)
        # Per stage, from the protocol's timestamps: capture → node receive, queued, inference, publish, node → here.
        self.stages = {name: LatencyWindow(100_000) for name in CONSUMER_STAGES}
        self.arrivals: list[int] = []
        self.received = 0
        self.last: protocol.Frame | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="usnst-consumer", daemon=True)

    def _loop(self):
        try:
            while not self.stop.is_set():
                if not self.sock.poll(100):
                    continue
                frame = protocol.decode(self.sock.recv_multipart())
                now = protocol.now_ns()
                if isinstance(frame, protocol.Frame):
                    self.received += 1
                    self.end_to_end.add((now - frame.capture_ns) / 1e6)
                    self._add_stages(frame, now)
                    self.last = frame
        finally:
            self.sock.close()

    def reset(self) -> None:
        """Forget what was measured so far (e.g. the frames of a connection handshake)."""
        self.end_to_end = LatencyWindow(100_000)
        self.stages = {name: LatencyWindow(100_000) for name in CONSUMER_STAGES}
        self.arrivals = []
        self.received = 0

    def _add_stages(self, frame: protocol.Frame, now: int) -> None:
        s = frame.stamps
        if len(self.arrivals) < 100_000:
            self.arrivals.append(now)
        if not all(k in s for k in protocol.NODE_STAMPS):
            return
        marks = (frame.capture_ns, s["recv_ns"], s["infer_start_ns"], s["infer_end_ns"], s["publish_ns"], now)
        for name, a, b in zip(CONSUMER_STAGES, marks, marks[1:]):
            self.stages[name].add((b - a) / 1e6)


def side_by_side(lq: np.ndarray, styled: np.ndarray, hq: np.ndarray) -> np.ndarray:
    """input | stylized | high-quality reference, labelled, as one uint8 image."""
    panels = []
    for img, label in ((lq, "input (LQ)"), (styled, "stylized"), (hq, "reference (HQ)")):
        panel = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        scale = max(img.shape[0] / 256, 0.4)
        cv2.putText(panel, label, (6, int(20 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, (0, 220, 255), 1, cv2.LINE_AA)
        panels.append(panel)
    return np.concatenate(panels, axis=1)


def run_demo(cfg: DemoConfig = DemoConfig()) -> dict:
    engine = load_engine(cfg.model, cfg.backend, EngineOptions(seed=cfg.seed, threads=cfg.threads))
    refs: OrderedDict[int, object] = OrderedDict()

    def keep(seq, sample):
        refs[seq] = sample
        while len(refs) > 256:
            refs.popitem(last=False)

    stream = phantom_stream(cfg.height, cfg.width, cfg.fps, "lq", cfg.seed, keep=keep,
                            loop_frames=int(round(cfg.loop_seconds * cfg.fps)), probe_kind=cfg.probe,
                            formation=cfg.formation, anatomy=cfg.anatomy, sends=cfg.sends)
    first = next(stream)  # renders the loop before anything starts
    context = zmq.Context.instance()
    sim_ep, out_ep = loopback_endpoints(cfg.transport, "usnst-demo")
    with tempfile.TemporaryDirectory(prefix="usnst-demo-keys-") as keys:
        sim_curve, node_curve, consumer_keys = _demo_keys(Path(keys)) if cfg.curve else (None, None, None)
        sim_sock, sim_bound = open_publisher(sim_ep, context, curve=sim_curve)
        node = Node(engine, NodeConfig(input=">" + sim_bound[0], output=out_ep, stats_interval=0, curve=node_curve),
                    context).start()
    consumer = Consumer(node.endpoints["output"][0], context, consumer_keys)
    consumer.thread.start()
    time.sleep(0.5)  # let both subscriptions reach their publishers (ZeroMQ's slow joiner)
    source = limited(itertools.chain([first], stream), duration=cfg.seconds)
    t0 = time.monotonic()
    sent = publish(source, sim_sock, stamp=True)
    sim_sock.close()
    # Let the last frame through the engine before stopping.
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and node.stats.snapshot()["published"] + node.stats.snapshot()["dropped"] < sent["sent"]:
        time.sleep(0.05)
    time.sleep(0.2)
    elapsed = time.monotonic() - t0
    node_stats = node.stop()
    consumer.stop.set()
    consumer.thread.join(timeout=5)

    report = {"engine": engine.describe(), "transport": cfg.transport, "curve": cfg.curve, "frame": [cfg.height, cfg.width],
              "phantom": {"probe": cfg.probe or "sector", "formation": cfg.formation, "anatomy": cfg.anatomy,
                          "sends": cfg.sends},
              "seconds": elapsed, "simulator": {**sent, "fps": cfg.fps}, "node": node_stats,
              "consumer": {"received": consumer.received,
                           "fps": consumer.received / elapsed if elapsed else 0.0,
                           "end_to_end_ms": dict(zip(("p50", "p99", "max"), consumer.end_to_end.percentiles((50, 99, 100))))}}
    last = consumer.last
    if last is not None and last.seq in refs:
        sample = refs[last.seq]
        picture = side_by_side(to_uint8(sample.lq), last.pixels[:, :, 0], to_uint8(sample.hq))
        write_png(cfg.out, picture)
        report["picture"] = cfg.out
    return report
