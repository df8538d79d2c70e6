"""Counters and latency percentiles for a stream, cheap enough to update on every frame."""
from __future__ import annotations

import bisect
import itertools
import math
import threading
import time
from collections import Counter, deque

import numpy as np


class LatencyWindow:
    """The last ``size`` samples of one stage's latency (ms); percentiles over that window, so a long
    run reports current behaviour and memory stays fixed."""

    def __init__(self, size: int = 2048):
        self.values: deque[float] = deque(maxlen=size)

    def add(self, ms: float) -> None:
        self.values.append(ms)

    def percentiles(self, qs=(50, 99)) -> list[float]:
        if not self.values:
            return [float("nan")] * len(qs)
        return [float(v) for v in np.percentile(np.fromiter(self.values, float), qs)]


class StreamStats:
    """What the node reports: frames in/out, drops, rejections by reason, and latency per stage.

    Stages, from the protocol's timestamps: ``wait`` received → inference start (time spent queued),
    ``infer`` inference start → end, ``publish`` inference end → sent, ``node`` received → sent.
    Thread-safe: the receiver thread and the inference loop both update it.
    """

    STAGES = ("wait", "infer", "publish", "node")
    # Latency histogram bucket bounds (ms) for live metrics: around a 33 ms frame period, up to a second.
    BUCKETS_MS = (1.0, 2.0, 5.0, 10.0, 20.0, 33.0, 50.0, 100.0, 200.0, 500.0, 1000.0)

    def __init__(self):
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.latency = {s: LatencyWindow() for s in self.STAGES}
        # Since start, per stage: samples per bucket (the last one open-ended) and their sum (ms).
        self.buckets = {s: [0] * (len(self.BUCKETS_MS) + 1) for s in self.STAGES}
        self.sums_ms = dict.fromkeys(self.STAGES, 0.0)
        self.started = time.monotonic()
        self._last_report = (self.started, 0, 0)

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def reject(self, reason: str) -> None:
        with self._lock:
            self.rejected[reason] += 1
            self.counts["rejected"] += 1

    def stamp(self, recv_ns: int, start_ns: int, end_ns: int, publish_ns: int) -> None:
        values = {"wait": start_ns - recv_ns, "infer": end_ns - start_ns, "publish": publish_ns - end_ns,
                  "node": publish_ns - recv_ns}
        with self._lock:
            for stage, ns in values.items():
                ms = ns / 1e6
                self.latency[stage].add(ms)
                self.buckets[stage][bisect.bisect_left(self.BUCKETS_MS, ms)] += 1
                self.sums_ms[stage] += ms

    def histograms(self) -> dict:
        """Per stage: (cumulative counts per bucket bound, with +inf last; sum in ms) since start."""
        with self._lock:
            out = {}
            for stage in self.STAGES:
                cumulative = list(itertools.accumulate(self.buckets[stage]))
                out[stage] = (list(zip((*self.BUCKETS_MS, math.inf), cumulative)), self.sums_ms[stage])
            return out

    def snapshot(self) -> dict:
        """A plain dict (JSON-ready) of everything counted so far."""
        with self._lock:
            elapsed = time.monotonic() - self.started
            snap = {
                "elapsed_s": elapsed,
                "received": self.counts["received"],
                "published": self.counts["published"],
                "dropped": self.counts["dropped"],
                "lost": self.counts["lost"],
                "rejected": self.counts["rejected"],
                "rejected_by_reason": dict(self.rejected),
                "engine_errors": self.counts["engine_errors"],
                "output_errors": self.counts["output_errors"],
                "refused_consumers": self.counts["refused_consumers"],  # CURVE handshakes refused at the output
                "bad_poses": self.counts["bad_poses"],  # frames stylized without their unusable image_to_world
                "bad_spacing": self.counts["bad_spacing"],  # frames stylized without their unusable spacing_mm
                "fps_in": self.counts["received"] / elapsed if elapsed > 0 else 0.0,
                "fps_out": self.counts["published"] / elapsed if elapsed > 0 else 0.0,
                "latency_ms": {s: dict(zip(("p50", "p99"), w.percentiles())) for s, w in self.latency.items()},
            }
        return snap

    def interval_line(self) -> str:
        """One line for the periodic log: rates since the previous line, totals, and latency percentiles."""
        now = time.monotonic()
        snap = self.snapshot()
        t0, rin0, rout0 = self._last_report
        dt = max(now - t0, 1e-9)
        self._last_report = (now, snap["received"], snap["published"])
        fin, fout = (snap["received"] - rin0) / dt, (snap["published"] - rout0) / dt
        return f"in {fin:5.1f} fps | out {fout:5.1f} fps | " + _totals_and_latency(snap)

    def summary_line(self) -> str:
        snap = self.snapshot()
        return (f"{snap['elapsed_s']:.1f} s: in {snap['fps_in']:.1f} fps | out {snap['fps_out']:.1f} fps | "
                + _totals_and_latency(snap))


def _totals_and_latency(snap: dict) -> str:
    lat = snap["latency_ms"]
    rejected = snap["rejected"]
    if snap["rejected_by_reason"]:
        rejected = f"{rejected} ({', '.join(f'{k} {v}' for k, v in sorted(snap['rejected_by_reason'].items()))})"
    parts = [f"received {snap['received']}", f"published {snap['published']}", f"dropped {snap['dropped']}",
             f"lost {snap['lost']}", f"rejected {rejected}"]
    if snap["engine_errors"]:
        parts.append(f"engine errors {snap['engine_errors']}")
    if snap["bad_poses"]:
        parts.append(f"bad poses {snap['bad_poses']}")
    if snap["bad_spacing"]:
        parts.append(f"bad spacing {snap['bad_spacing']}")
    stages = [f"{s} p50 {lat[s]['p50']:.1f} p99 {lat[s]['p99']:.1f} ms" for s in ("wait", "infer", "node")
              if math.isfinite(lat[s]["p50"])]  # no frame yet: no percentiles, rather than 'nan'
    return " | ".join(parts + stages)
