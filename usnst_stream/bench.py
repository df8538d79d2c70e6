"""`usnst bench`: the engine alone, the stream end to end with the input rate swept until frames drop, and
the protocol's cost over plain pyzmq, in one run.

Everything is measured side by side in the same process and run (machines here are noisy), over real loopback
sockets (tcp and ipc). Frames are rendered before timing starts so the simulator's own cost is not measured, and
each frame's capture time is stamped as it is sent.
"""
from __future__ import annotations

import itertools
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import zmq

from usnst.engines.base import Engine
from usnst_io import protocol
from usnst_io.media import to_float, to_uint8, write_png
from usnst_stream.demo import Consumer
from usnst_stream.node import Node, NodeConfig
from usnst_stream.phantom import PhantomRenderer
from usnst_stream.publisher import open_publisher
from usnst_stream.sockets import loopback_endpoints
from usnst_stream.stats import LatencyWindow

log = logging.getLogger(__name__)


def _phantom_frames(size: int, n: int) -> list[np.ndarray]:
    renderer = PhantomRenderer(size, size, seed=0)
    return [to_uint8(renderer.render(i / 30).lq) for i in range(n)]


def transport_overhead(size: int, n: int = 300, endpoint: str = "tcp://127.0.0.1:*") -> dict:
    """Per-message time of send → receive on one PUB/SUB pair: plain pyzmq (topic + raw bytes, zero-copy)
    versus the usnst protocol (encode header + pixels, receive, decode and validate). Returns p50/p99 in µs and
    the ratio of medians."""
    ctx = zmq.Context.instance()
    pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    pub.bind(endpoint)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(pub.getsockopt_string(zmq.LAST_ENDPOINT))
    pixels = _phantom_frames(size, 1)[0]
    deadline = time.monotonic() + 5
    while not sub.poll(10) and time.monotonic() < deadline:  # wait out the slow joiner
        pub.send_multipart([b"x", b""])
    while sub.poll(50):
        sub.recv_multipart()

    def plain(i):
        pub.send_multipart([b"usnst/frame", pixels], copy=False)
        parts = sub.recv_multipart(copy=False)
        return np.frombuffer(parts[1].buffer, np.uint8).reshape(size, size)

    def framed(i):
        pub.send_multipart(protocol.encode(protocol.Frame(i, protocol.now_ns(), pixels)), copy=False)
        frame = protocol.decode(sub.recv_multipart(copy=False))
        assert isinstance(frame, protocol.Frame)
        return frame.pixels

    for i in range(20):  # warm-up: first sends allocate buffers on both sides
        plain(i)
        framed(i)
    times = {"plain": [], "protocol": []}
    for i in range(n):  # interleaved, so both see the same machine state
        for name, fn in (("plain", plain), ("protocol", framed)):
            t0 = time.perf_counter_ns()
            fn(i)
            times[name].append((time.perf_counter_ns() - t0) / 1e3)
    pub.close(0)
    sub.close(0)
    out = {"size": size, "messages": n, "bytes": pixels.nbytes}
    for name, ts in times.items():
        out[name + "_us"] = {"p50": float(np.percentile(ts, 50)), "p99": float(np.percentile(ts, 99))}
    out["ratio_p50"] = out["protocol_us"]["p50"] / out["plain_us"]["p50"]
    return out


def _paced_send(pub: zmq.Socket, frames: list[np.ndarray], fps: float, seconds: float, first_seq: int = 0) -> int:
    """Send frames at exactly ``fps`` (sleep to each due time, no re-anchoring), stamping capture_ns at the
    moment of sending, so end-to-end latency starts when the frame leaves the 'simulator'. Sequence numbers go on
    from ``first_seq``: a source that starts again at 0 is, to the node, a restarted simulator."""
    n = max(1, int(round(seconds * fps)))
    t0 = time.monotonic()
    for i in range(n):
        delay = t0 + i / fps - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        frame = protocol.Frame(first_seq + i, protocol.now_ns(), frames[i % len(frames)])
        pub.send_multipart(protocol.encode(frame), copy=False)
    return n


def _open_chain(engine: Engine, size: int, transport: str) -> tuple[zmq.Socket, Node, Consumer, int]:
    """Publisher → node → consumer on fresh loopback endpoints, connected (handshake done) and counting from zero."""
    ctx = zmq.Context.instance()
    in_ep, out_ep = loopback_endpoints(transport, "usnst-bench")
    pub, (pub_ep,) = open_publisher(in_ep, ctx)
    node = Node(engine, NodeConfig(input=">" + pub_ep, output=out_ep, stats_interval=0, warmup=(size, size)),
                ctx).start()
    consumer = Consumer(node.endpoints["output"][0], ctx)
    consumer.thread.start()
    return pub, node, consumer, _handshake(pub, consumer)


def _summary(window: LatencyWindow) -> dict:
    p50, p95, p99, pmax = window.percentiles((50, 95, 99, 100))
    return {"p50": p50, "p95": p95, "p99": p99, "max": pmax}


def stream_run(engine: Engine, size: int, fps: float, seconds: float = 3.0, transport: str = "tcp",
               frames: list[np.ndarray] | None = None) -> dict:
    """One end-to-end run: a publisher at a fixed ``fps`` → a real node → a subscriber, over ``transport``.
    Reports counts (sent, published, dropped by the node to stay current, lost before it), the fraction of
    frames that did not come out, per-stage latency from the protocol's timestamps, end-to-end latency,
    jitter (standard deviation of end-to-end latency) and the spacing of output frames."""
    pub, node, consumer, seq = _open_chain(engine, size, transport)
    frames = frames or _phantom_frames(size, 16)
    before = node.stats.snapshot()
    t0 = time.monotonic()
    sent = _paced_send(pub, frames, fps, seconds, first_seq=seq)
    # Wait for the frame in flight: until nothing new has arrived for a while (≥ 2 inference times).
    infer_ms = node.stats.snapshot()["latency_ms"]["infer"]["p99"]
    settle = 0.2 + 2 * (0 if infer_ms != infer_ms else infer_ms) / 1e3  # NaN when nothing came out yet
    last, quiet_since, deadline = -1, time.monotonic(), time.monotonic() + 10
    while time.monotonic() - quiet_since < settle and time.monotonic() < deadline:
        if consumer.received != last:
            last, quiet_since = consumer.received, time.monotonic()
        time.sleep(0.01)
    elapsed = time.monotonic() - t0
    after = node.stop()
    stats = {k: after[k] - before[k] for k in ("received", "published", "dropped", "lost")}
    consumer.stop.set()
    consumer.thread.join(5)
    pub.close(0)
    e2e = np.fromiter(consumer.end_to_end.values, float)
    arrivals = np.diff(np.asarray(consumer.arrivals, np.int64)) / 1e6
    out = {
        "size": size, "transport": transport, "input_fps": fps, "seconds": elapsed, "sent": sent,
        "received_by_node": stats["received"], "published": stats["published"], "delivered": consumer.received,
        "dropped": stats["dropped"], "lost": stats["lost"],
        "drop_fraction": 1.0 - consumer.received / sent, "output_fps": consumer.received / seconds,
        "stages_ms": {name: _summary(w) for name, w in consumer.stages.items()},
        "end_to_end_ms": _summary(consumer.end_to_end),
        "jitter_ms": float(e2e.std()) if e2e.size else float("nan"),
        "output_interval_ms": ({"p50": float(np.percentile(arrivals, 50)), "p99": float(np.percentile(arrivals, 99))}
                               if arrivals.size else {"p50": float("nan"), "p99": float("nan")}),
    }
    out["_e2e_samples"] = e2e.tolist()
    return out


def _rss_mib() -> float:
    """Resident memory of this process (Linux /proc; NaN elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def soak(engine: Engine, size: int, fps: float, seconds: float, window: float = 30.0, transport: str = "tcp") -> dict:
    """A long run at a fixed rate through one node: every ``window`` seconds, this process's resident memory
    and the window's end-to-end p50/p99 and delivered fraction, so growth or drift shows as a trend."""
    pub, node, consumer, seq = _open_chain(engine, size, transport)
    frames = _phantom_frames(size, 16)
    windows = []
    t0 = time.monotonic()
    try:
        for _ in range(max(1, round(seconds / window))):
            sent = _paced_send(pub, frames, fps, window, first_seq=seq)
            seq += sent
            time.sleep(0.1)
            e2e = consumer.end_to_end.percentiles((50, 99))
            windows.append({"t_s": round(time.monotonic() - t0, 1), "rss_mib": _rss_mib(), "sent": sent,
                            "delivered": consumer.received, "e2e_p50_ms": e2e[0], "e2e_p99_ms": e2e[1]})
            log.info("soak %s", windows[-1])
            consumer.reset()
    finally:
        stats = node.stop()
        consumer.stop.set()
        consumer.thread.join(5)
        pub.close(0)
    first, last = windows[0], windows[-1]
    return {"size": size, "fps": fps, "seconds": seconds, "transport": transport, "windows": windows,
            "rss_growth_mib": last["rss_mib"] - first["rss_mib"],
            "p99_drift_ms": last["e2e_p99_ms"] - first["e2e_p99_ms"], "node": stats}


def format_soak(result: dict) -> str:
    lines = [f"Soak: {result['size']}x{result['size']} at {result['fps']:g} fps over {result['transport']} for "
             f"{result['seconds']:g} s", f"{'t s':>7} {'RSS MiB':>8} {'sent':>6} {'out':>6} {'e2e p50':>8} {'e2e p99':>8}"]
    for w in result["windows"]:
        lines.append(f"{w['t_s']:>7.1f} {w['rss_mib']:>8.1f} {w['sent']:>6d} {w['delivered']:>6d} "
                     f"{w['e2e_p50_ms']:>6.1f}ms {w['e2e_p99_ms']:>6.1f}ms")
    lines.append(f"memory growth first -> last window: {result['rss_growth_mib']:+.1f} MiB; "
                 f"e2e p99 drift: {result['p99_drift_ms']:+.1f} ms")
    return "\n".join(lines)


def _handshake(pub: zmq.Socket, consumer: Consumer, timeout: float = 5.0) -> int:
    """Wait until a frame gets through publisher → node → consumer (ZeroMQ's slow joiner), then reset counts.
    Returns the next sequence number: the probes are numbered like any frame, so the run goes on from them."""
    probe = _phantom_frames(16, 1)[0]
    deadline = time.monotonic() + timeout
    seq = 0
    while consumer.received == 0 and time.monotonic() < deadline:
        pub.send_multipart(protocol.encode(protocol.Frame(seq, protocol.now_ns(), probe)), copy=False)
        seq += 1
        time.sleep(0.05)
    time.sleep(0.1)
    consumer.reset()
    return seq


def sweep_rates(engine: Engine, size: int, transport: str, seconds: float, rates: list[float] | None = None,
                max_drop: float = 0.01, frames: list[np.ndarray] | None = None) -> dict:
    """Raise the input rate until frames drop. Without explicit ``rates`` the sweep is placed around the
    engine's own capacity (1 / median inference time), from half of it to 1.5×. The sustainable rate is the
    highest rate before the first one with more than ``max_drop`` of frames not delivered; the sweep goes on to a
    second failing rate so the table shows the trend (noisy machines), then stops."""
    frames = frames or _phantom_frames(size, 16)
    if rates is None:
        lat = engine_latency(engine, size, frames=5, warmup=1, imgs=frames)
        capacity = 1e3 / lat["p50_ms"]
        rates = sorted({round(min(max(capacity * f, 1.0), 2000.0), 1) for f in (0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5)})
    runs, failures = [], 0
    for fps in sorted(rates):
        log.info("stream %dx%d over %s at %.1f fps ...", size, size, transport, fps)
        run = stream_run(engine, size, fps, seconds, transport, frames)
        runs.append(run)
        if run["drop_fraction"] > max_drop:
            failures += 1
            if failures == 2:
                break
    # Sustainable: the highest rate below the first one that dropped (a later lucky pass does not count).
    passing = list(itertools.takewhile(lambda r: r["drop_fraction"] <= max_drop, runs))
    return {"size": size, "transport": transport, "max_drop": max_drop, "runs": runs,
            "sustainable_fps": passing[-1]["input_fps"] if passing else None}


def engine_latency(engine: Engine, size: int, frames: int = 30, warmup: int = 3, gflop: float | None = None,
                   imgs: list[np.ndarray] | None = None) -> dict:
    """Engine alone on size×size phantom frames: latency percentiles after warm-up, frames/s, and GFLOP/s achieved."""
    imgs = [to_float(f) for f in (imgs or _phantom_frames(size, 4))]
    for i in range(warmup):
        engine.infer(imgs[i % len(imgs)])
    times = []
    for i in range(frames):
        t0 = time.perf_counter()
        engine.infer(imgs[i % len(imgs)])
        times.append((time.perf_counter() - t0) * 1e3)
    p50, p95, p99, pmax = (float(v) for v in np.percentile(times, [50, 95, 99, 100]))
    out = {"backend": engine.name, "size": size, "frames": frames, "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
           "max_ms": pmax, "fps": 1e3 / float(np.mean(times))}
    if gflop is not None:
        out["gflop_per_frame"] = gflop
        out["gflop_per_s"] = gflop * out["fps"]
    return out


def format_engine_table(rows: list[dict]) -> str:
    lines = ["Engine only (after warm-up)",
             f"{'backend':>12} {'size':>9} {'frames':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} "
             f"{'fps':>7} {'GFLOP':>7} {'GFLOP/s':>8}"]
    for r in rows:
        lines.append(f"{r['backend']:>12} {r['size']:>4}x{r['size']:<4} {r['frames']:>6} {r['p50_ms']:>8.1f} "
                     f"{r['p95_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['max_ms']:>8.1f} {r['fps']:>7.1f} "
                     f"{r.get('gflop_per_frame', float('nan')):>7.2f} {r.get('gflop_per_s', float('nan')):>8.1f}")
    return "\n".join(lines)


def format_stream_table(sweeps: list[dict]) -> str:
    lines = ["End to end: publisher at a fixed rate -> node -> subscriber (pre-rendered LQ phantom frames)",
             f"{'size':>9} {'via':>4} {'in fps':>7} {'out fps':>8} {'not out':>8} {'infer p50':>10} {'e2e p50':>8} "
             f"{'e2e p99':>8} {'e2e max':>8} {'jitter':>7}"]
    for sweep in sweeps:
        for r in sweep["runs"]:
            e2e = r["end_to_end_ms"]
            lines.append(f"{r['size']:>4}x{r['size']:<4} {r['transport']:>4} {r['input_fps']:>7.1f} {r['output_fps']:>8.1f} "
                         f"{100 * r['drop_fraction']:>7.1f}% {r['stages_ms']['infer']['p50']:>8.1f}ms "
                         f"{e2e['p50']:>6.1f}ms {e2e['p99']:>6.1f}ms {e2e['max']:>6.1f}ms {r['jitter_ms']:>5.1f}ms")
        fps = sweep["sustainable_fps"]
        lines.append(f"{'':>9} {sweep['transport']:>4} sustainable (<= {100 * sweep['max_drop']:.0f}% not delivered): "
                     + (f"{fps:.1f} fps" if fps else "below the lowest rate tried"))
    return "\n".join(lines)


def format_transport_table(rows: list[dict]) -> str:
    lines = ["Transport baseline: send -> receive of one frame on a PUB/SUB pair, same bytes, interleaved",
             f"{'size':>9} {'plain p50':>10} {'usnst p50':>10} {'ratio':>6}"]
    for r in rows:
        lines.append(f"{r['size']:>4}x{r['size']:<4} {r['plain_us']['p50']:>8.0f}us {r['protocol_us']['p50']:>8.0f}us "
                     f"{r['ratio_p50']:>6.2f}")
    return "\n".join(lines)


def format_report(result: dict) -> str:
    parts = []
    if result.get("engine_only"):
        parts.append(format_engine_table(result["engine_only"]))
    if result.get("stream"):
        parts.append(format_stream_table(result["stream"]))
    if result.get("transport"):
        parts.append(format_transport_table(result["transport"]))
    return "\n\n".join(parts)


def machine() -> dict:
    """Enough about the machine to compare reports: CPU count, platform, library versions, GPU if any."""
    import platform

    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


@dataclass
class BenchPlan:
    sizes: tuple[int, ...] = (256, 512)
    transports: tuple[str, ...] = ("tcp", "ipc")
    seconds: float = 3.0  # per stream run
    rates: tuple[float, ...] | None = None  # None: placed around the engine's capacity
    engine_frames: int = 30
    messages: int = 300  # per transport-baseline measurement
    max_drop: float = 0.01
    gflop: dict | None = None  # size -> GFLOP per frame, when the caller can count them


def run_bench(engine: Engine, plan: BenchPlan = BenchPlan()) -> dict:
    """Engine alone, end-to-end rate sweeps per size and transport, and the transport baseline, in one run."""
    result = {"machine": machine(), "engine": engine.describe(), "engine_only": [], "stream": [], "transport": []}
    for size in plan.sizes:
        frames = _phantom_frames(size, 16)
        gflop = (plan.gflop or {}).get(size)
        result["engine_only"].append(engine_latency(engine, size, plan.engine_frames, gflop=gflop, imgs=frames))
        for transport in plan.transports:
            result["stream"].append(sweep_rates(engine, size, transport, plan.seconds,
                                                list(plan.rates) if plan.rates else None, plan.max_drop, frames))
    for size in plan.sizes:
        result["transport"].append(transport_overhead(size, plan.messages))
    return result


def strip_samples(result: dict) -> tuple[dict, dict]:
    """(result without raw samples, {label: end-to-end samples at each sweep's sustainable rate, or its last})."""
    curves = {}
    for sweep in result.get("stream", []):
        pick = next((r for r in reversed(sweep["runs"]) if r["input_fps"] == sweep["sustainable_fps"]), sweep["runs"][-1])
        curves[f"{sweep['size']}px {sweep['transport']} {pick['input_fps']:.0f} fps"] = pick["_e2e_samples"]
        for r in sweep["runs"]:
            r.pop("_e2e_samples", None)
    return result, curves


_PLOT_COLOURS = [(200, 90, 30), (40, 60, 220), (40, 160, 40), (160, 40, 160), (0, 140, 200), (90, 90, 90)]  # BGR


def plot_latency_cdf(curves: dict[str, list[float]], path: str | Path, width: int = 720, height: int = 400) -> None:
    """Cumulative distribution of end-to-end latency, one line per run, log-spaced ms axis (OpenCV drawing)."""
    img = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 60, 220, 30, 50
    samples = {k: np.sort(np.asarray(v, float)) for k, v in curves.items() if len(v)}
    if samples:
        lo = np.log10(max(min(v[0] for v in samples.values()), 1e-3))
        hi = np.log10(max(v[-1] for v in samples.values()))
        hi = hi if hi > lo else lo + 1
        span_x, span_y = width - left - right, height - top - bottom
        for i, (label, v) in enumerate(samples.items()):
            colour = _PLOT_COLOURS[i % len(_PLOT_COLOURS)]
            xs = left + (np.log10(np.maximum(v, 1e-3)) - lo) / (hi - lo) * span_x
            ys = top + span_y - np.arange(1, len(v) + 1) / len(v) * span_y
            cv2.polylines(img, [np.stack([xs, ys], 1).astype(np.int32)], False, colour, 2, cv2.LINE_AA)
            cv2.putText(img, label, (width - right + 10, top + 18 * i + 10), cv2.FONT_HERSHEY_SIMPLEX, 0.42, colour, 1)
        ticks = [m * 10.0 ** d for d in range(int(np.floor(lo)), int(np.ceil(hi)) + 1) for m in (1, 2, 5)]
        for tick in ticks:
            x = int(left + (np.log10(tick) - lo) / (hi - lo) * span_x)
            if left <= x <= width - right:
                cv2.line(img, (x, top), (x, height - bottom), (225, 225, 225), 1)
                cv2.putText(img, f"{tick:g}", (x - 8, height - bottom + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        for frac in (0.5, 0.99):
            y = int(top + span_y * (1 - frac))
            cv2.line(img, (left, y), (width - right, y), (225, 225, 225), 1)
            cv2.putText(img, f"{frac:g}", (left - 40, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    cv2.rectangle(img, (left, top), (width - right, height - bottom), (160, 160, 160), 1)
    cv2.putText(img, "fraction of frames", (4, top - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1)
    cv2.putText(img, "capture -> consumer latency, ms (log scale)", (left, height - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (0, 0, 0), 1)
    write_png(path, img)
