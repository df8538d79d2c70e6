"""Flicker of a stylization model with per-frame versus fixed (per-stream) noise, on a simulated scan.

The sequence: 2 s of a paused simulator (the same LQ frame repeated: a stable stylization must not change at all),
then a moving probe, 30 frames/s. Writes a JSON of the measures and a side-by-side video
(input | noise per frame | noise fixed) to look at.

    python research/flicker_study.py --seconds 10 --size 256 --out flicker
"""
import argparse
import json
from pathlib import Path

import numpy as np

from usnst.engines.base import EngineOptions
from usnst.engines.registry import load_engine
from usnst.offline.temporal import flicker
from usnst_io.media import to_float, to_uint8, write_video
from usnst_stream.phantom import PhantomRenderer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="checkpoint or embedded name (default: the embedded lq2hq)")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--paused", type=float, default=2.0, help="seconds of a paused simulator at the start")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--out", default="flicker", help="folder for flicker.json and flicker.mp4")
    args = ap.parse_args()

    renderer = PhantomRenderer(args.size, args.size, seed=0)
    n, paused = int(args.seconds * args.fps), int(args.paused * args.fps)
    still = to_uint8(renderer.render(0.0).lq)
    inputs = [still] * paused + [to_uint8(renderer.render(i / args.fps).lq) for i in range(paused, n)]
    outputs, report = {}, {"model": args.model or "lq2hq", "frames": n, "fps": args.fps, "size": args.size}
    for mode in ("frame", "fixed"):
        engine = load_engine(args.model, args.backend, EngineOptions(noise=mode, seed=0))
        outputs[mode] = [to_uint8(engine.infer(to_float(f))) for f in inputs]
        report[mode] = {"whole": flicker(inputs, outputs[mode]),
                        "moving": flicker(inputs[paused:], outputs[mode][paused:])}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "flicker.json").write_text(json.dumps(report, indent=2))
    write_video([np.concatenate([x, a, b], axis=1) for x, a, b in zip(inputs, outputs["frame"], outputs["fixed"])],
                out / "flicker.mp4", args.fps)
    for mode in ("frame", "fixed"):
        w, m = report[mode]["whole"], report[mode]["moving"]
        print(f"noise {mode:>5}: paused input -> output changes {w['static_output_change']:.3f} grey levels/frame; "
              f"moving: ratio {m['ratio']:.3f} (input {m['input_change']:.2f}, output {m['output_change']:.2f})")
    print(f"wrote {out / 'flicker.json'} and {out / 'flicker.mp4'} (input | noise per frame | noise fixed)")


if __name__ == "__main__":
    main()
