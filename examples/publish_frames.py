"""A minimal simulator-side publisher written from docs/PROTOCOL.md alone: pyzmq + msgpack + numpy, no usnst.

    python examples/publish_frames.py [ENDPOINT] [FRAMES]      # then: usnst serve  (and consume_stylized.py)
"""
import sys
import time

import msgpack
import numpy as np
import zmq

endpoint = sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:5555"
n_frames = int(sys.argv[2]) if len(sys.argv) > 2 else 300

ctx = zmq.Context()
pub = ctx.socket(zmq.PUB)
pub.bind(endpoint)
time.sleep(1.0)  # let subscribers connect (ZeroMQ's slow joiner)

height, width, fps = 128, 160, 30
depth_mm = 60.0  # the probe preset's depth: with the pixel spacing the grain keeps a scanner's size in mm
yy, xx = np.mgrid[0:height, 0:width]
for seq in range(n_frames):
    # A moving gradient stands in for the simulator's rendered B-mode frame.
    pixels = ((xx + yy + 4 * seq) % 256).astype(np.uint8)
    header = {"version": 1, "seq": seq, "capture_ns": time.time_ns(), "width": width, "height": height,
              "channels": 1, "dtype": "uint8",
              "meta": {"probe": {"angle_rad": 0.0}, "spacing_mm": [depth_mm / height, depth_mm / height]}}
    pub.send_multipart([b"usnst/frame", msgpack.packb(header), pixels], copy=False)
    time.sleep(1 / fps)
pub.close(linger=1000)
ctx.term()
