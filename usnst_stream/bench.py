"""`usnst bench`: the node's throughput and latency, and the protocol's cost over plain pyzmq, in one run.

Everything is measured side by side in the same process and run (machines here are noisy), over real
loopback sockets. Frames are rendered before timing starts so the simulator's own cost is not measured.
"""
from __future__ import annotations

import logging
import time

import numpy as np
import zmq

from engines.backends import Engine
from usnst_stream import protocol
from usnst_stream.demo import Consumer
from usnst_stream.node import Node, NodeConfig
from usnst_stream.phantom import PhantomRenderer, to_uint8
from usnst_stream.publisher import open_publisher, publish

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


def node_throughput(engine: Engine, size: int, fps: float = 60.0, seconds: float = 5.0) -> dict:
    """Publish pre-rendered size×size frames at ``fps`` through a real node to a consumer for ``seconds``.
    With ``fps`` above what the engine sustains, the output rate is the node's throughput; latency then
    includes the wait for the frame in progress, as a live user would see."""
    ctx = zmq.Context.instance()
    pub, (pub_ep,) = open_publisher("@tcp://127.0.0.1:*", ctx)
    node = Node(engine, NodeConfig(input=">" + pub_ep, output="@tcp://127.0.0.1:*", stats_interval=0,
                                   warmup=(size, size)), ctx).start()
    consumer = Consumer(node.endpoints["output"][0], ctx)
    consumer.thread.start()
    time.sleep(0.5)
    frames = _phantom_frames(size, 16)
    n = int(seconds * fps)
    source = ((i / fps, protocol.encode(protocol.Frame(i, protocol.now_ns(), frames[i % len(frames)])))
              for i in range(n))
    t0 = time.monotonic()
    sent = publish(source, pub)
    time.sleep(0.5 + 2 * (node.stats.snapshot()["latency_ms"]["infer"]["p50"] or 0) / 1e3)
    elapsed = time.monotonic() - t0
    stats = node.stop()
    consumer.stop.set()
    consumer.thread.join(5)
    pub.close()
    lat = stats["latency_ms"]
    return {
        "size": size, "input_fps": fps, "seconds": elapsed, "sent": sent["sent"],
        "published": stats["published"], "dropped": stats["dropped"], "lost": stats["lost"],
        "throughput_fps": stats["published"] / elapsed,
        "infer_ms": lat["infer"], "node_ms": lat["node"], "wait_ms": lat["wait"],
        "end_to_end_ms": dict(zip(("p50", "p99"), consumer.end_to_end.percentiles())),
        "engine": engine.describe(),
    }


def engine_latency(engine: Engine, size: int, frames: int = 30, warmup: int = 3, gflop: float | None = None) -> dict:
    """Engine alone on size×size phantom frames: latency percentiles after warm-up, frames/s, and GFLOP/s achieved."""
    imgs = [f.astype(np.float32) / 255.0 for f in _phantom_frames(size, 4)]
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


def format_tables(result: dict) -> str:
    lines = ["Node throughput and latency (pre-rendered LQ phantom frames, tcp loopback)",
             f"{'size':>9} {'in fps':>7} {'out fps':>8} {'dropped':>8} {'infer p50':>10} {'infer p99':>10} "
             f"{'e2e p50':>8} {'e2e p99':>8}"]
    for r in result["node"]:
        lines.append(f"{r['size']:>4}x{r['size']:<4} {r['input_fps']:>7.0f} {r['throughput_fps']:>8.1f} {r['dropped']:>8d} "
                     f"{r['infer_ms']['p50']:>8.1f}ms {r['infer_ms']['p99']:>8.1f}ms {r['end_to_end_ms']['p50']:>6.1f}ms "
                     f"{r['end_to_end_ms']['p99']:>6.1f}ms")
    lines += ["", "Protocol overhead: send -> receive of one frame on a PUB/SUB pair, same bytes, interleaved",
              f"{'size':>9} {'plain p50':>10} {'usnst p50':>10} {'ratio':>6}"]
    for r in result["transport"]:
        lines.append(f"{r['size']:>4}x{r['size']:<4} {r['plain_us']['p50']:>8.0f}us {r['protocol_us']['p50']:>8.0f}us "
                     f"{r['ratio_p50']:>6.2f}")
    return "\n".join(lines)


def run_bench(engine: Engine, sizes=(256, 512), fps: float = 60.0, seconds: float = 5.0, messages: int = 300) -> dict:
    result = {"node": [], "transport": []}
    for size in sizes:
        log.info("node at %dx%d ...", size, size)
        result["node"].append(node_throughput(engine, size, fps, seconds))
    for size in sizes:
        result["transport"].append(transport_overhead(size, messages))
    return result
