"""Live metrics of a running node for Prometheus (`usnst serve --metrics PORT`), read from the node's own counters
at scrape time, so the frame path does no extra work: frames by outcome, rejections by reason, per-stage latency
histograms (seconds, Prometheus' base unit) and what engine runs.

    usnst_frames_total{outcome="received|published|dropped|lost|rejected|engine_errors|output_errors|bad_poses|bad_spacing"}
    usnst_rejected_frames_total{reason="..."}
    usnst_stage_latency_seconds_bucket{stage="wait|infer|publish|node", le="..."}  (+ _sum, _count)
    usnst_engine_info{backend=..., model=..., noise=..., ...}
"""
from __future__ import annotations

import logging
import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.exposition import ThreadingWSGIServer

from usnst_stream.sockets import is_loopback

log = logging.getLogger(__name__)
OUTCOMES = ("received", "published", "dropped", "lost", "rejected", "engine_errors", "output_errors", "bad_poses",
            "bad_spacing")


class NodeCollector:
    """A Prometheus collector over a node's StreamStats and engine description."""

    def __init__(self, node):
        self.node = node

    def collect(self):
        stats = self.node.stats
        snap = stats.snapshot()
        frames = CounterMetricFamily("usnst_frames", "Frames by outcome since the node started", labels=["outcome"])
        for outcome in OUTCOMES:
            frames.add_metric([outcome], snap[outcome])
        yield frames
        rejected = CounterMetricFamily("usnst_rejected_frames", "Rejected input frames by reason", labels=["reason"])
        for reason, n in sorted(snap["rejected_by_reason"].items()):
            rejected.add_metric([reason], n)
        yield rejected
        latency = HistogramMetricFamily("usnst_stage_latency_seconds", "Per-stage latency: wait (queued), infer, "
                                        "publish, node (received to sent)", labels=["stage"])
        for stage, (buckets, sum_ms) in stats.histograms().items():
            latency.add_metric([stage], [("+Inf" if le == float("inf") else repr(le / 1e3), n) for le, n in buckets],
                               sum_ms / 1e3)
        yield latency
        # No file paths: a scrape endpoint is read by whoever can reach it; hashes name the model just as well.
        info = {k: str(v) for k, v in self.node.engine.describe().items()
                if k in ("backend", "device", "precision", "noise", "seed", "checkpoint_sha256", "artifact_sha256",
                         "claimed_checkpoint_sha256", "verified", "task")}
        engine = InfoMetricFamily("usnst_engine", "The engine this node runs")
        engine.add_metric([], info)
        yield engine


def serve_metrics(node, address: str) -> tuple[object, str]:
    """Start the HTTP endpoint for ``node`` at ``address`` ("PORT" on loopback, or "HOST:PORT"); returns the server
    (``shutdown()`` stops it) and the URL it answers on. Only ``/metrics`` answers (404 elsewhere), and an address
    beyond loopback is logged as a warning, as the node's ZeroMQ binds are."""
    host, _, port = address.rpartition(":")
    host = host or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--metrics wants PORT or HOST:PORT (0: any free port), got {address!r}")
    if not is_loopback(f"tcp://{host}:{port}"):
        log.warning("metrics listening beyond loopback on %s:%s: any host that can reach it may read them", host, port)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(NodeCollector(node))
    metrics = make_wsgi_app(registry)

    def app(environ, start_response):
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"not found: the metrics are at /metrics\n"]
        return metrics(environ, start_response)

    server = make_server(host, int(port), app, ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="usnst-metrics", daemon=True).start()
    return server, f"http://{host}:{server.server_port}/metrics"


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # a scrape every few seconds is not news
        pass
