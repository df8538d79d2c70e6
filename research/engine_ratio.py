"""Two models on one backend, timed in the same run with their frames interleaved (A, B, A, B …), so a noisy machine
slows both alike and the ratio means something. Prints p50 latency, frames/s and the ratio per size.

    python research/engine_ratio.py --a lq2hq_fast --b runs/x/model.pt --backend onnxruntime --sizes 256,512 --frames 60
"""
import argparse
import time

import numpy as np

from usnst.engines.base import EngineOptions
from usnst.engines.registry import load_engine
from usnst_io.media import to_float, to_uint8
from usnst_stream.phantom import PhantomRenderer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", required=True, help="first model (embedded name or checkpoint)")
    ap.add_argument("--b", required=True, help="second model")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--sizes", default="512")
    ap.add_argument("--frames", type=int, default=60)
    args = ap.parse_args()
    engines = {name: load_engine(name, args.backend, EngineOptions()) for name in (args.a, args.b)}
    for size in (int(s) for s in args.sizes.split(",")):
        frame = to_float(to_uint8(PhantomRenderer(size, size, seed=1).render(0.0).lq))
        times = {name: [] for name in engines}
        for engine in engines.values():
            engine.infer(frame)  # warm-up (and the fixed noise planes for this size)
        for _ in range(args.frames):
            for name, engine in engines.items():
                t0 = time.perf_counter()
                engine.infer(frame)
                times[name].append((time.perf_counter() - t0) * 1e3)
        p50 = {name: float(np.median(t)) for name, t in times.items()}
        print(f"{size}x{size} {args.backend}: " + ", ".join(f"{n} p50 {p50[n]:.1f} ms ({1e3 / p50[n]:.1f} fps)"
                                                             for n in engines)
              + f"; ratio b/a {p50[args.b] / p50[args.a]:.2f}", flush=True)


if __name__ == "__main__":
    main()
