"""CURVE encryption and authentication end to end: simulator → node → consumers over real tcp sockets."""
import stat
import time

import numpy as np
import pytest
import zmq

from usnst_io import protocol
from usnst_stream.node import Node, NodeConfig
from usnst_stream.publisher import open_publisher
from usnst_stream.security import CurveConfig, generate_keys, stop_authenticator


@pytest.fixture
def keys(tmp_path):
    """Key pairs for every party, and one allow-list folder per server."""
    made = {name: generate_keys(tmp_path / "keys", name) for name in ("simulator", "node", "viewer", "intruder")}
    for server, clients in (("simulator", ["node"]), ("node", ["viewer"])):
        allow = tmp_path / f"{server}-allows"
        allow.mkdir()
        for client in clients:
            (allow / f"{client}.key").write_bytes(made[client][0].read_bytes())
    return tmp_path, made


def test_keys_are_written_with_a_private_secret_and_never_overwritten(tmp_path):
    public, secret = generate_keys(tmp_path, "node")
    assert public.read_text().count("public-key") == 1 and "secret-key" in secret.read_text()
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        generate_keys(tmp_path, "node")


def _subscriber(ctx, endpoint, curve_client=None, server_public=None):
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    if curve_client:
        pub_key, secret_key = zmq.auth.load_certificate(curve_client)
        sub.curve_publickey, sub.curve_secretkey = pub_key, secret_key
        sub.curve_serverkey = zmq.auth.load_certificate(server_public)[0]
    sub.connect(endpoint)
    return sub


def test_only_clients_with_an_allowed_key_receive_and_the_stream_is_served_encrypted(keys, tiny_engine, caplog):
    import logging

    caplog.set_level(logging.WARNING)
    root, k = keys
    ctx = zmq.Context()
    sim_curve = CurveConfig(str(k["simulator"][1]), allow_dir=str(root / "simulator-allows"))
    pub, (pub_ep,) = open_publisher("@tcp://127.0.0.1:*", ctx, curve=sim_curve)
    node_curve = CurveConfig(str(k["node"][1]), allow_dir=str(root / "node-allows"), server_key=str(k["simulator"][0]))
    node = Node(tiny_engine, NodeConfig(input=">" + pub_ep, output="@tcp://127.0.0.1:*", stats_interval=0,
                                        curve=node_curve), ctx).start()
    out_ep = node.endpoints["output"][0]
    viewer = _subscriber(ctx, out_ep, k["viewer"][1], k["node"][0])
    intruder = _subscriber(ctx, out_ep, k["intruder"][1], k["node"][0])  # valid CURVE, key not on the list
    plain = _subscriber(ctx, out_ep)  # no CURVE at all
    got = {"viewer": 0, "intruder": 0, "plain": 0}
    try:
        deadline = time.monotonic() + 3.0
        seq = 0
        while time.monotonic() < deadline:
            pub.send_multipart(protocol.encode(protocol.Frame(seq, protocol.now_ns(), np.zeros((16, 16), np.uint8))))
            seq += 1
            time.sleep(0.02)
            for name, sock in (("viewer", viewer), ("intruder", intruder), ("plain", plain)):
                while sock.poll(0):
                    assert isinstance(protocol.decode(sock.recv_multipart()), protocol.Frame)
                    got[name] += 1
        snap = node.stats.snapshot()
    finally:
        node.stop()
        for sock in (viewer, intruder, plain, pub):
            sock.close(0)
        stop_authenticator(ctx)
        ctx.term()
    assert got["viewer"] > 20 and snap["published"] > 20  # the node got frames over its CURVE client link too
    assert got["intruder"] == 0 and got["plain"] == 0
    # Refusals are news at the default level (issue 25, item 10): both kinds, counted and logged.
    assert snap["refused_consumers"] >= 2 and "output: a peer's handshake on" in caplog.text
    assert "DENIED (CURVE)" in caplog.text  # the unknown key, named by the authenticator


def test_a_node_without_the_simulators_key_gets_no_frames(keys, tiny_engine, caplog):
    import logging

    caplog.set_level(logging.WARNING)
    root, k = keys
    ctx = zmq.Context()
    sim_curve = CurveConfig(str(k["simulator"][1]), allow_dir=str(root / "simulator-allows"))
    pub, (pub_ep,) = open_publisher("@tcp://127.0.0.1:*", ctx, curve=sim_curve)
    rogue = CurveConfig(str(k["intruder"][1]), allow_dir=str(root / "node-allows"), server_key=str(k["simulator"][0]))
    node = Node(tiny_engine, NodeConfig(input=">" + pub_ep, output="@tcp://127.0.0.1:*", stats_interval=0,
                                        curve=rogue), ctx).start()
    try:
        for seq in range(50):
            pub.send_multipart(protocol.encode(protocol.Frame(seq, protocol.now_ns(), np.zeros((8, 8), np.uint8))))
            time.sleep(0.02)
        snap = node.stats.snapshot()
    finally:
        node.stop()
        pub.close(0)
        stop_authenticator(ctx)
        ctx.term()
    assert snap["received"] == 0
    assert snap["rejected_by_reason"].get("handshake_failed", 0) >= 1 and "input: the handshake with" in caplog.text


def test_a_world_readable_secret_key_is_warned_about(tmp_path, caplog):
    import os

    from usnst_stream.security import _load

    _, secret = generate_keys(tmp_path, "node")
    _load(str(secret), want_secret=True)
    assert "readable by other users" not in caplog.text
    os.chmod(secret, 0o644)
    _load(str(secret), want_secret=True)
    assert "readable by other users" in caplog.text and "chmod 600" in caplog.text


def test_curve_misconfiguration_is_a_clear_error(keys, tiny_engine):
    root, k = keys
    ctx = zmq.Context()
    try:
        with pytest.raises(ValueError, match="needs --curve-allow"):
            open_publisher("@tcp://127.0.0.1:*", ctx, curve=CurveConfig(str(k["node"][1])))
        with pytest.raises(ValueError, match="holds only a public key"):
            open_publisher("@tcp://127.0.0.1:*", ctx, curve=CurveConfig(str(k["node"][0]), str(root / "node-allows")))
        with pytest.raises(ValueError, match="needs --curve-server"):
            Node(tiny_engine, NodeConfig(input=">tcp://127.0.0.1:1", output="@tcp://127.0.0.1:*",
                                         curve=CurveConfig(str(k["node"][1]), str(root / "node-allows"))), ctx).start()
        with pytest.raises(ValueError, match="either binds or connects"):
            open_publisher("@tcp://127.0.0.1:*,>tcp://127.0.0.1:9", ctx,
                           curve=CurveConfig(str(k["node"][1]), str(root / "node-allows"), str(k["viewer"][0])))
    finally:
        stop_authenticator(ctx)
        ctx.term()


def test_endpoint_lists_are_checked_before_use():
    from usnst_stream.sockets import SCHEMES, check_endpoints

    assert check_endpoints("@tcp://127.0.0.1:*,>ipc:///tmp/x") == [(True, "tcp://127.0.0.1:*"), (False, "ipc:///tmp/x")]
    assert check_endpoints("tcp://[::1]:5556") == [(True, "tcp://[::1]:5556")]
    for bad in ("@tcp://127.0.0.1:0", "@tcp://127.0.0.1:65536", "tcp://host", "ipc://", "igtl://127.0.0.1:18944"):
        with pytest.raises(ValueError):
            check_endpoints(bad)
    assert check_endpoints("igtl://127.0.0.1:18944", SCHEMES + ("igtl",)) == [(True, "igtl://127.0.0.1:18944")]


def test_an_ipv6_loopback_endpoint_binds_and_connects():
    import socket

    from usnst_stream.sockets import attach, is_loopback

    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback on this machine: {exc}")
    ctx = zmq.Context()
    try:
        pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
        (bound,) = attach(pub, "@tcp://[::1]:*", True)
        assert bound.startswith("tcp://[::1]:") and is_loopback(bound)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        attach(sub, ">" + bound, False)
        deadline = time.monotonic() + 5
        while not sub.poll(50):
            assert time.monotonic() < deadline, "nothing arrived over IPv6"
            pub.send(b"over ipv6")
        assert sub.recv() == b"over ipv6"
    finally:
        ctx.destroy(linger=0)
