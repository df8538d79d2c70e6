"""The node end to end over real sockets: answers, stays current under load, survives bad input."""
import time

import msgpack
import numpy as np
import pytest

from usnst.engines.base import Engine
from usnst_io import protocol
from usnst_stream.frames import from_engine, to_engine
from usnst_stream.node import LatestSlot


class SlowEngine(Engine):
    """Wraps a real engine and sleeps, to make inference deliberately slower than the input."""

    name = "slow"

    def __init__(self, inner, seconds):
        self.inner, self.seconds = inner, seconds
        self.calls = 0

    def infer(self, frame):
        self.calls += 1
        time.sleep(self.seconds)
        return self.inner.infer(frame)


class FailingEngine(Engine):
    """Raises on frames whose first pixel is 255, like an engine running out of memory on one frame."""

    name = "failing"

    def __init__(self, inner):
        self.inner = inner

    def infer(self, frame):
        if frame[0, 0] == 1.0:
            raise MemoryError("simulated out of memory")
        return self.inner.infer(frame)


class PoseKeepingEngine(Engine):
    """Wraps a real engine and keeps the pose and the pixel spacing each frame came with."""

    name = "pose-keeping"

    def __init__(self, inner):
        self.inner, self.poses, self.spacings = inner, [], []

    def infer(self, frame):
        return self.inner.infer(frame)

    def infer_at(self, frame, pose, spacing_mm=None):
        self.poses.append(pose)
        self.spacings.append(spacing_mm)
        return self.inner.infer(frame)


def test_the_node_hands_each_frames_pose_to_the_engine_and_stylizes_a_frame_with_a_bad_one(harness_factory,
                                                                                        tiny_engine):
    engine = PoseKeepingEngine(tiny_engine)
    h = harness_factory(engine)
    h.handshake()
    engine.poses.clear()
    pose = np.eye(4)
    pose[:3, :3] *= 0.25
    pose[0, 3] = 12.5
    good = {protocol.IMAGE_TO_WORLD: pose.ravel().tolist()}
    bad = {protocol.IMAGE_TO_WORLD: [1.0, 2.0]}
    outputs = []
    for meta in (good, bad, None, good):
        sent = h.send_frame(meta=meta)
        outputs.append(h.recv())
        assert outputs[-1] is not None and outputs[-1].seq == sent.seq  # every frame answered, the bad pose too
    assert outputs[1].meta == bad  # passed through as sent
    assert np.array_equal(engine.poses[0], pose) and np.array_equal(engine.poses[3], pose)
    assert engine.poses[1] is None and engine.poses[2] is None
    assert h.node.stats.snapshot()["bad_poses"] == 1
    assert "bad poses 1" in h.node.stats.summary_line()


def test_the_node_hands_each_frames_pixel_spacing_to_the_engine_and_counts_a_bad_one(harness_factory, tiny_engine):
    engine = PoseKeepingEngine(tiny_engine)
    h = harness_factory(engine)
    h.handshake()
    engine.spacings.clear()
    metas = ({protocol.SPACING_MM: [0.1, 0.2]}, {protocol.SPACING_MM: [0.1, float("nan")]},
             {protocol.SPACING_MM: "0.1"}, None)
    for meta in metas:
        sent = h.send_frame(meta=meta)
        out = h.recv()
        assert out is not None and out.seq == sent.seq  # every frame answered, a bad spacing too
    assert engine.spacings == [(0.1, 0.2), None, None, None]
    assert h.node.stats.snapshot()["bad_spacing"] == 2 and "bad spacing 2" in h.node.stats.summary_line()


def test_a_configured_spacing_sizes_frames_that_give_none_and_a_frames_own_spacing_wins(harness_factory, tiny_engine):
    """`usnst serve --spacing-mm`: a simulator that sends neither pose nor spacing states its spacing once."""
    engine = PoseKeepingEngine(tiny_engine)
    h = harness_factory(engine, spacing_mm=(0.3, 0.4))
    h.handshake()
    engine.spacings.clear()
    for meta in ({protocol.SPACING_MM: [0.1, 0.2]}, None, {protocol.SPACING_MM: [0.1, -1.0]}):
        sent = h.send_frame(meta=meta)
        out = h.recv()
        assert out is not None and out.seq == sent.seq
    assert engine.spacings == [(0.1, 0.2), (0.3, 0.4), (0.3, 0.4)]  # a bad one counted and treated as none
    assert h.node.stats.snapshot()["bad_spacing"] == 1


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_node_stylizes_frames_end_to_end(harness_factory, tiny_engine, transport):
    h = harness_factory(tiny_engine, transport)
    h.handshake()
    sent = h.send_frame(h=30, w=41, meta={"probe": {"angle_rad": 0.25}})
    out = h.recv()
    assert isinstance(out, protocol.Frame)
    assert out.seq == sent.seq and out.capture_ns == sent.capture_ns
    assert out.pixels.shape == sent.pixels.shape and out.pixels.dtype == np.uint8
    assert out.meta == {"probe": {"angle_rad": 0.25}}
    assert out.topic == protocol.OUTPUT_TOPIC
    s = out.stamps
    assert sent.capture_ns <= s["recv_ns"] <= s["infer_start_ns"] <= s["infer_end_ns"] <= s["publish_ns"]
    # The output is the engine's result on this frame, not an echo of the input.
    expected_shape_ok = out.pixels[:, :, 0]
    assert not np.array_equal(expected_shape_ok, sent.pixels[:, :, 0])


@pytest.mark.parametrize("dtype, channels", [(np.uint16, 1), (np.float32, 1), (np.uint8, 3)])
def test_output_keeps_input_size_dtype_and_channels(harness_factory, tiny_engine, dtype, channels):
    h = harness_factory(tiny_engine)
    h.handshake()
    sent = h.send_frame(h=17, w=13, dtype=dtype, channels=channels)
    out = h.recv()
    assert out.seq == sent.seq
    assert out.pixels.dtype == np.dtype(dtype) and out.pixels.shape == (17, 13, channels)
    if channels == 3:
        assert np.array_equal(out.pixels[:, :, 0], out.pixels[:, :, 2])


def test_slow_engine_processes_the_newest_frame_and_counts_drops(harness_factory, tiny_engine):
    slow = SlowEngine(tiny_engine, 0.3)
    h = harness_factory(slow)
    h.handshake(timeout=15)
    before = h.node.stats.snapshot()
    sent = [h.send_frame() for _ in range(20)]  # a burst far faster than 0.3 s per frame
    last = sent[-1].seq
    received = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        out = h.recv(0.5)
        if out is not None:
            received.append(out.seq)
            if out.seq == last:
                break
    assert received and received[-1] == last, "the newest frame must always be processed"
    assert len(received) < 6, "a backlog was processed instead of skipping to the newest frame"
    after = h.close()
    dropped = after["dropped"] - before["dropped"]
    published = after["published"] - before["published"]
    assert dropped + published == 20 and dropped >= 14
    assert after["lost"] == 0


def test_latest_slot_holds_one_item_and_reports_replacement():
    slot = LatestSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True
    assert slot.take(0.01) == 2
    assert slot.take(0.01) is None


def test_malformed_messages_are_counted_by_reason_and_the_node_keeps_serving(harness_factory, tiny_engine):
    h = harness_factory(tiny_engine)
    h.handshake()
    good_header = {"version": 1, "seq": 10**6, "capture_ns": 1, "width": 4, "height": 3, "channels": 1, "dtype": "uint8"}
    bad = [
        [b"usnst/frame", b"junk"],
        [b"usnst/frame", b"\xc1", bytes(12)],
        [b"usnst/frame", msgpack.packb({**good_header, "version": 9}), bytes(12)],
        [b"usnst/frame", msgpack.packb({**good_header, "width": "4"}), bytes(12)],
        [b"usnst/frame", msgpack.packb(good_header), bytes(5)],
        [b"usnst/frame", msgpack.packb({**good_header, "width": 10**6}), bytes(12)],
    ]
    for parts in bad:
        h.send(parts)
    sent = h.send_frame()
    out = h.recv()
    assert out is not None and out.seq == sent.seq
    snap = h.node.stats.snapshot()
    assert snap["rejected"] == len(bad)
    assert snap["rejected_by_reason"] == {"parts": 1, "header_decode": 1, "version": 1, "field_type": 1,
                                         "payload_size": 1, "dimensions": 1}


def test_engine_failure_on_one_frame_is_reported_and_serving_continues(harness_factory, tiny_engine):
    h = harness_factory(FailingEngine(tiny_engine))
    h.handshake()
    doomed = protocol.Frame(next(h.seq), protocol.now_ns(), np.full((8, 8, 1), 255, np.uint8))
    h.send(protocol.encode(doomed))
    assert h.wait_for(lambda s: s["engine_errors"] == 1)
    sent = h.send_frame()
    out = h.recv()
    assert out is not None and out.seq == sent.seq


def test_sequence_gaps_are_counted_as_lost(harness_factory, tiny_engine):
    h = harness_factory(tiny_engine)
    h.handshake()
    base = next(h.seq)
    for seq in (base, base + 5):
        h.send(protocol.encode(protocol.Frame(seq, protocol.now_ns(), np.zeros((4, 4, 1), np.uint8))))
        assert h.recv() is not None
    assert h.node.stats.snapshot()["lost"] == 4


def test_frame_conversions_map_full_range_and_back():
    for dtype, top in ((np.uint8, 255), (np.uint16, 65535)):
        px = np.array([[[0], [top]]], dtype)
        g = to_engine(px)
        assert g.dtype == np.float32 and g.tolist() == [[0.0, 1.0]]
        assert np.array_equal(from_engine(g, px), px)
    rgb = np.zeros((1, 1, 3), np.uint8)
    rgb[0, 0] = (30, 60, 90)
    assert to_engine(rgb)[0, 0] == pytest.approx(60 / 255)


def test_a_node_without_input_says_it_is_waiting_instead_of_printing_nan(tiny_engine, caplog):
    import logging

    from usnst_stream.node import Node, NodeConfig

    node = Node(tiny_engine, NodeConfig(input=">tcp://127.0.0.1:5999", output="@tcp://127.0.0.1:*",
                                        stats_interval=0.1)).start()
    with caplog.at_level(logging.INFO, logger="usnst_stream.node"):
        node.run(0.35)
    text = caplog.text
    assert "waiting for input on tcp://127.0.0.1:5999" in text and "nan" not in text
    assert "received 0" in node.stats.summary_line() and "nan" not in node.stats.summary_line()


def test_prometheus_metrics_are_scraped_live_during_a_run(harness_factory, tiny_engine):
    import re
    import urllib.error
    import urllib.request

    h = harness_factory(tiny_engine, metrics="127.0.0.1:0")
    h.handshake()
    for _ in range(6):
        h.send_frame()
        assert h.recv() is not None
    h.send([b"usnst/frame", b"\xc1", b""])  # malformed: rejected by reason
    time.sleep(0.3)
    url = h.node.endpoints["metrics"][0]
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    value = lambda pattern: float(re.search(pattern + r" ([0-9.e+]+)", text).group(1))
    published = value(r'usnst_frames_total\{outcome="published"\}')
    assert published >= 6 and value(r'usnst_frames_total\{outcome="received"\}') >= published
    assert value(r'usnst_rejected_frames_total\{reason="[a-z_]+"\}') == 1
    assert value(r'usnst_stage_latency_seconds_count\{stage="infer"\}') == published
    assert value(r'usnst_stage_latency_seconds_bucket\{le="\+Inf",stage="node"\}') == published
    assert 'usnst_engine_info{' in text and 'noise="fixed"' in text
    assert "/" not in text.split("usnst_engine_info{", 1)[1].split("}", 1)[0]  # no file paths in the labels
    with pytest.raises(urllib.error.HTTPError) as info:  # only /metrics answers
        urllib.request.urlopen(url.replace("/metrics", "/etc/passwd"), timeout=5)
    assert info.value.code == 404
    h.close()
    with pytest.raises(OSError):  # the endpoint goes with the node
        urllib.request.urlopen(url, timeout=2)


@pytest.mark.parametrize("dtype, channels", [(np.uint8, 1), (np.uint16, 1), (np.float32, 3)])
def test_the_python_api_gives_what_the_node_publishes(harness_factory, tiny_checkpoint, dtype, channels):
    from conftest import gray_frame

    from usnst import Stylizer
    from usnst.engines.registry import load_engine

    stylizer = Stylizer(str(tiny_checkpoint), noise="fixed", seed=4)
    h = harness_factory(load_engine(tiny_checkpoint, options=stylizer.engine.options))
    h.handshake()
    frame = gray_frame(1000, h=40, w=52, dtype=dtype, channels=channels)
    h.send(protocol.encode(frame))
    out = h.recv()
    while out is not None and out.seq != 1000:
        out = h.recv()
    mine = stylizer(frame.pixels)
    assert mine.dtype == frame.pixels.dtype and mine.shape == out.pixels.shape
    assert np.array_equal(mine, out.pixels)
    assert stylizer.describe()["noise"] == "fixed"
    with pytest.raises(ValueError, match="uint8, uint16 or float32"):
        stylizer(np.zeros((8, 8), np.int32))


def test_a_connecting_node_survives_an_oversized_part_and_a_restarted_simulator(tiny_engine, caplog):
    """libzmq abandons a connection for good after a part over MAXMSGSIZE; the node must log it, count it and
    reconnect, then go on receiving from the same simulator and from a restarted one (issue 25, item 1)."""
    import logging

    import zmq
    from conftest import gray_frame

    from usnst_stream.node import Node, NodeConfig

    ctx = zmq.Context()

    def simulator(port=0):
        pub = ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        deadline = time.monotonic() + 5
        while True:  # a port just closed is released asynchronously
            try:
                pub.bind(f"tcp://127.0.0.1:{port or '*'}")
                break
            except zmq.ZMQError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        return pub, int(pub.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])

    pub, port = simulator()
    limits = protocol.Limits(16, 16)
    node = Node(tiny_engine, NodeConfig(input=f">tcp://127.0.0.1:{port}", output="@tcp://127.0.0.1:*",
                                        limits=limits, stats_interval=0), ctx).start()
    seq = iter(range(10**6))

    def received_after(send, timeout=10.0):
        """Send frames until the node's received count grows."""
        start = node.stats.snapshot()["received"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            send.send_multipart(protocol.encode(gray_frame(next(seq), h=8, w=8)))
            time.sleep(0.05)
            if node.stats.snapshot()["received"] > start:
                return True
        return False

    try:
        with caplog.at_level(logging.WARNING, logger="usnst_stream.node"):
            assert received_after(pub)
            oversized = bytes(limits.max_message_bytes() + 1)
            pub.send_multipart([protocol.INPUT_TOPIC, b"\x80", oversized])
            deadline = time.monotonic() + 5
            while node.stats.snapshot()["rejected_by_reason"].get("part_too_large", 0) == 0:
                assert time.monotonic() < deadline, "the dropped connection was never noticed"
                time.sleep(0.02)
            assert received_after(pub), "deaf after an oversized part"
            pub.close()
            pub, _ = simulator(port)  # the simulator restarts on the same port
            assert received_after(pub), "deaf after the simulator restarted"
        assert "more than the largest frame" in caplog.text
        assert node.stats.snapshot()["rejected_by_reason"] == {"part_too_large": 1}
    finally:
        node.stop()
        ctx.destroy(linger=0)


def test_the_node_never_publishes_a_header_over_the_protocol_limit(harness_factory, tiny_engine):
    """Issue 25, item 7: an input header that fits 64 KiB but not with the node's timestamps is rejected before
    inference, so a second node chained after this one never has to drop it."""
    from conftest import gray_frame

    h = harness_factory(tiny_engine)
    h.handshake()
    base = protocol.encode(gray_frame(next(h.seq), meta={"pad": ""}))
    fill = protocol.MAX_HEADER_BYTES - len(base[1]) - 40  # an input header ~40 bytes under the limit
    big = protocol.Frame(next(h.seq), protocol.now_ns(), np.zeros((4, 4, 1), np.uint8), {"pad": "x" * fill})
    parts = protocol.encode(big)
    assert len(parts[1]) <= protocol.MAX_HEADER_BYTES and isinstance(protocol.decode(parts), protocol.Frame)
    h.send(parts)
    small = protocol.Frame(next(h.seq), protocol.now_ns(), np.zeros((4, 4, 1), np.uint8), {"pad": "x" * (fill - 200)})
    h.send(protocol.encode(small))
    out = h.recv()
    assert out is not None and out.seq == small.seq  # the frame with room is served ...
    assert h.node.stats.snapshot()["rejected_by_reason"] == {"header_size": 1}  # ... the other refused
    raw = h.sub.recv_multipart() if h.sub.poll(200) else None
    assert raw is None


def test_a_sequence_jump_is_a_renumbering_not_lost_frames(harness_factory, tiny_engine, caplog):
    import logging

    h = harness_factory(tiny_engine)
    h.handshake()
    lost_before = h.node.stats.snapshot()["lost"]
    with caplog.at_level(logging.WARNING, logger="usnst_stream.node"):
        for seq in (2**64 - 3, 2**64 - 1):
            h.send(protocol.encode(protocol.Frame(seq, protocol.now_ns(), np.zeros((4, 4, 1), np.uint8))))
            assert h.recv() is not None
    assert h.node.stats.snapshot()["lost"] - lost_before == 1  # the real gap of one; the jump counts none
    assert "sequence jumped" in caplog.text


def test_metrics_beyond_loopback_are_warned_like_any_bind(tiny_engine, caplog):
    import logging

    from usnst_stream.node import Node
    from usnst_stream.prometheus import serve_metrics

    with caplog.at_level(logging.WARNING):
        server, url = serve_metrics(Node(tiny_engine), "0.0.0.0:0")
    server.shutdown()
    server.server_close()
    assert "beyond loopback" in caplog.text and url.startswith("http://0.0.0.0:")
