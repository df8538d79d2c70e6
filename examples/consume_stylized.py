"""A minimal consumer of the node's output written from docs/PROTOCOL.md alone: prints per-stage latency.

    usnst simulate &  usnst serve &  python examples/consume_stylized.py [ENDPOINT] [FRAMES]
"""
import sys
import time

import msgpack
import numpy as np
import zmq

endpoint = sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:5556"
n_frames = int(sys.argv[2]) if len(sys.argv) > 2 else 100

ctx = zmq.Context()
sub = ctx.socket(zmq.SUB)
sub.setsockopt(zmq.SUBSCRIBE, b"usnst/stylized")
sub.connect(endpoint)
for _ in range(n_frames):
    topic, raw_header, payload = sub.recv_multipart(copy=False)
    now = time.time_ns()
    h = msgpack.unpackb(raw_header.bytes)
    dtype = {"uint8": "<u1", "uint16": "<u2", "float32": "<f4"}[h["dtype"]]
    frame = np.frombuffer(payload.buffer, dtype).reshape(h["height"], h["width"], h["channels"])
    ms = lambda a, b: (b - a) / 1e6
    print(f"seq {h['seq']:6d} {h['width']}x{h['height']} transport {ms(h['capture_ns'], h['recv_ns']):6.1f} ms  "
          f"queued {ms(h['recv_ns'], h['infer_start_ns']):6.1f} ms  infer {ms(h['infer_start_ns'], h['infer_end_ns']):6.1f} ms  "
          f"end-to-end {ms(h['capture_ns'], now):6.1f} ms  mean {frame.mean():.1f}", flush=True)
sub.close()
ctx.term()
