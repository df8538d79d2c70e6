"""A minimal simulator-side publisher written from docs/PROTOCOL.md alone: pyzmq + msgpack + numpy, no usnst.

    python examples/publish_frames.py            # then: usnst serve   (and a consumer, e.g. consume_stylized.py)
"""
import time

import msgpack
import numpy as np
import zmq

ctx = zmq.Context()
pub = ctx.socket(zmq.PUB)
pub.bind("tcp://127.0.0.1:5555")
time.sleep(0.5)  # let subscribers connect (ZeroMQ's slow joiner)

height, width, fps = 256, 256, 30
yy, xx = np.mgrid[0:height, 0:width]
for seq in range(10 * fps):
    # A moving gradient stands in for the simulator's rendered B-mode frame.
    pixels = ((xx + yy + 4 * seq) % 256).astype(np.uint8)
    header = {"version": 1, "seq": seq, "capture_ns": time.time_ns(), "width": width, "height": height,
              "channels": 1, "dtype": "uint8", "meta": {"probe": {"angle_rad": 0.0}}}
    pub.send_multipart([b"usnst/frame", msgpack.packb(header), pixels], copy=False)
    time.sleep(1 / fps)
pub.close()
ctx.term()
