"""Shared fixtures: tiny real networks, and a real node between a test publisher and a test subscriber."""
from __future__ import annotations

import itertools
import time
import uuid

import numpy as np
import pytest
import torch
import zmq

from usnst.engines.base import EngineOptions
from usnst.engines.body_engine import TorchEagerEngine
from usnst.engines.checkpoint import save_checkpoint
from usnst.engines.transformer_net import NetConfig, TransformerNet
from usnst_io import protocol
from usnst_stream.node import Node, NodeConfig

TINY = NetConfig(width=4, n_residual=1, noise=True)


def tiny_net(seed: int = 0, config: NetConfig = TINY) -> TransformerNet:
    torch.manual_seed(seed)
    net = TransformerNet(config)
    with torch.no_grad():  # non-zero noise weights so noise injection is visible in outputs
        for name, p in net.named_parameters():
            if name.startswith("noise"):
                p.normal_(0, 0.5)
    return net.eval()


@pytest.fixture
def tiny_checkpoint(tmp_path):
    return save_checkpoint(tmp_path / "tiny.pt", tiny_net(), {"task": "lq2hq", "training_data": "none (test)"})


@pytest.fixture
def tiny_engine():
    return TorchEagerEngine(tiny_net(), EngineOptions(seed=0, threads=1))


def gray_frame(seq: int, h: int = 24, w: int = 32, dtype=np.uint8, channels: int = 1, meta=None) -> protocol.Frame:
    rng = np.random.default_rng(seq)
    if dtype == np.float32:
        pixels = rng.random((h, w, channels), dtype=np.float32)
    else:
        pixels = rng.integers(0, np.iinfo(dtype).max, (h, w, channels), dtype=dtype, endpoint=True)
    return protocol.Frame(seq, protocol.now_ns(), pixels, meta or {})


class StreamHarness:
    """A test publisher → real Node → test subscriber, over tcp or ipc on loopback."""

    def __init__(self, engine, transport: str = "tcp", tmp_path=None, **node_kwargs):
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.setsockopt(zmq.SNDHWM, 10_000)
        if transport == "tcp":
            self.pub.bind("tcp://127.0.0.1:*")
            out = "@tcp://127.0.0.1:*"
        else:
            base = f"ipc://{tmp_path}/{uuid.uuid4().hex[:8]}"
            self.pub.bind(base + "-in")
            out = "@" + base + "-out"
        in_ep = self.pub.getsockopt_string(zmq.LAST_ENDPOINT)
        cfg = NodeConfig(input=">" + in_ep, output=out, stats_interval=0, **node_kwargs)
        self.node = Node(engine, cfg, self.ctx).start()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(self.node.endpoints["output"][0])
        self.seq = itertools.count()

    def send(self, parts) -> None:
        self.pub.send_multipart(parts, copy=False)

    def send_frame(self, **kw) -> protocol.Frame:
        frame = gray_frame(next(self.seq), **kw)
        self.send(protocol.encode(frame))
        return frame

    def recv(self, timeout: float = 5.0):
        if not self.sub.poll(int(timeout * 1000)):
            return None
        return protocol.decode(self.sub.recv_multipart())

    def handshake(self, timeout: float = 10.0) -> None:
        """Send frames until one comes back: both subscriptions have then reached their publishers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.send_frame()
            if self.recv(0.2) is not None:
                time.sleep(0.3)
                while self.recv(0.05) is not None:
                    pass
                return
        raise AssertionError("node never answered the handshake frames")

    def wait_for(self, predicate, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.node.stats.snapshot()):
                return True
            time.sleep(0.02)
        return False

    def close(self) -> dict:
        final = self.node.stop()
        self.pub.close()
        self.sub.close()
        self.ctx.term()
        return final


@pytest.fixture
def harness_factory(tmp_path):
    made = []

    def make(engine, transport="tcp", **kw):
        h = StreamHarness(engine, transport, tmp_path, **kw)
        made.append(h)
        return h

    yield make
    for h in made:
        if not h.node.stopped:
            h.close()
