"""OpenIGTLink output: a pyigtl client (as 3D Slicer / PLUS would connect) receives stylized IMAGE messages."""
import socket
import time

import numpy as np
import pytest
import zmq

from usnst_io import protocol
from usnst_stream.node import Node, NodeConfig

pyigtl = pytest.importorskip("pyigtl", reason="pyigtl is not installed (pip install usnst[igtl])")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_serving_igtl(engine, also: str = ""):
    """A publisher → a real node whose output includes an OpenIGTLink server: (context, publisher, node, igtl port)."""
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    igtl_port = _free_port()
    node = Node(engine, NodeConfig(input=f">tcp://127.0.0.1:{port}", stats_interval=0,
                                   output=f"{also}igtl://127.0.0.1:{igtl_port}"), ctx).start()
    return ctx, pub, node, igtl_port


# A probe rotated 30° about the world's z, pixels 0.3 mm, the frame's corner at (10, -5, 2) mm.
_C, _S = np.cos(np.pi / 6), np.sin(np.pi / 6)
POSE = np.array([[0.3 * _C, -0.3 * _S, 0, 10], [0.3 * _S, 0.3 * _C, 0, -5], [0, 0, 0.3, 2], [0, 0, 0, 1]])


def test_stylized_frames_reach_an_openigtlink_client_placed_by_pose_or_spacing_with_timestamp(tiny_engine):
    ctx, pub, node, igtl_port = _node_serving_igtl(tiny_engine, also="@tcp://127.0.0.1:*,")
    assert node.endpoints["output"][-1] == f"igtl://127.0.0.1:{igtl_port}"
    client = pyigtl.OpenIGTLinkClient(host="127.0.0.1", port=igtl_port)
    message = None
    try:
        deadline = time.monotonic() + 10
        seq = 0
        pixels = np.tile(np.arange(40, dtype=np.uint8), (30, 1))[:, :, None]  # 30 rows × 40 columns
        while message is None and time.monotonic() < deadline:
            capture = protocol.now_ns()
            meta = {"spacing_mm": [0.25, 0.25]} if seq % 2 == 0 else {protocol.IMAGE_TO_WORLD: POSE.ravel().tolist()}
            pub.send_multipart(protocol.encode(protocol.Frame(seq, capture, pixels, meta)))
            seq += 1
            message = client.wait_for_message("usnst", timeout=0.1)
        posed = None
        while posed is None and time.monotonic() < deadline:  # a frame with a pose: the slice placed by it
            pub.send_multipart(protocol.encode(protocol.Frame(seq, protocol.now_ns(), pixels,
                                                              {protocol.IMAGE_TO_WORLD: POSE.ravel().tolist()})))
            seq += 1
            got = client.wait_for_message("usnst", timeout=0.1)
            if got is not None and not np.allclose(np.diag(got.ijk_to_world_matrix)[:3], [0.25, 0.25, 1.0]):
                posed = got
        stats = node.stats.snapshot()
    finally:
        client.stop()
        node.stop()
        pub.close(0)
        ctx.term()
    assert message is not None, "no IMAGE message reached the OpenIGTLink client"
    assert message.image.shape == (1, 30, 40) and message.image.dtype == np.uint8
    assert np.allclose(np.diag(message.ijk_to_world_matrix)[:3], [0.25, 0.25, 1.0]) or \
        np.allclose(message.ijk_to_world_matrix, POSE, atol=1e-4)
    assert posed is not None and np.allclose(posed.ijk_to_world_matrix, POSE, atol=1e-4)
    assert abs(message.timestamp - time.time()) < 10  # seconds since the epoch, from capture_ns
    assert stats["engine_errors"] == 0 and stats.get("output_errors", 0) == 0


def test_a_client_that_disconnects_leaves_no_traceback_and_the_next_one_is_served(tiny_engine, capfd):
    ctx, pub, node, igtl_port = _node_serving_igtl(tiny_engine)
    pixels = np.zeros((30, 40, 1), np.uint8)
    send = lambda seq: pub.send_multipart(protocol.encode(protocol.Frame(seq, protocol.now_ns(), pixels)))
    try:
        rude = socket.create_connection(("127.0.0.1", igtl_port))
        for seq in range(30):  # frames flow to the raw client, which never reads …
            send(seq)
            time.sleep(0.02)
        rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        rude.close()  # … and is gone (reset)
        for seq in range(30, 60):
            send(seq)
            time.sleep(0.02)
        client = pyigtl.OpenIGTLinkClient(host="127.0.0.1", port=igtl_port)
        message, deadline, seq = None, time.monotonic() + 10, 60
        while message is None and time.monotonic() < deadline:
            send(seq)
            seq += 1
            message = client.wait_for_message("usnst", timeout=0.1)
        client.stop()
    finally:
        node.stop()
        pub.close(0)
        ctx.term()
    assert message is not None  # the server went on serving
    assert "Traceback" not in capfd.readouterr().err


def test_spacing_that_is_not_two_positive_finite_numbers_never_reaches_the_viewer(caplog):
    from usnst_stream.igtl_sink import IgtlSink

    sink = IgtlSink(f"igtl://127.0.0.1:{_free_port()}", spacing_mm=(0.5, 0.25))
    try:
        assert sink.spacing({"spacing_mm": [0.2, 0.3]}) == (0.2, 0.3)
        assert sink.spacing({}) == (0.5, 0.25)
        assert np.array_equal(sink.placement({}), np.diag([0.25, 0.5, 1.0, 1.0]))  # columns first: i, j, k
        for bad in ([float("nan"), 0.3], [float("inf"), 1.0], [0.0, 1.0], [-1.0, 1.0], ["1", "2"], [1.0], 7, [True, 1]):
            assert sink.spacing({"spacing_mm": bad}) == (0.5, 0.25)
        assert sink.bad_spacing == 8 and caplog.text.count("spacing_mm") == 1
    finally:
        sink.close()
    with pytest.raises(ValueError, match="finite"):
        IgtlSink(f"igtl://127.0.0.1:{_free_port()}", spacing_mm=(float("nan"), 1.0))
