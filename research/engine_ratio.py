"""Two models on one backend, timed in the same run with their frames interleaved (A, B, A, B …), so a noisy machine
slows both alike and the ratio means something. Prints p50 latency, frames/s and the ratio per size.

    python research/engine_ratio.py --a lq2hq_fast --b runs/x/model.pt --backend onnxruntime --sizes 256,512 --frames 60
    python research/engine_ratio.py --a lq2hq_fast --a-screen-grain --b lq2hq_fast --moving --sizes 512   # issue 27
    python research/engine_ratio.py --a lq2hq_fast --a-kept-grain --b lq2hq_fast --moving --sizes 256,512

``--moving``: the frames of a moving probe (as a stream sends them) instead of one frame again and again — what the
tissue-anchored grain costs shows only then; ``--a-screen-grain``: model A with its fixed grain drawn on the screen,
as the stage drew it before issue 27; ``--a-kept-grain``: model A with its anchored scatterers never renewed (before
stop 41); ``--a-stage-at COMMIT``: model A run by the beam-speckle stage's code as of a git commit (what a change to
the stage's code, not to a checkpoint, costs).

    python research/engine_ratio.py --a lq2hq_fast --a-stage-at 277225f --b lq2hq_fast --moving --sizes 512,1000

``--real-video ID``: the frames of a real scanner's video (a recording of `usnst real-scanners`, e.g. clarius-ocular,
resized to each size) in place of the phantom's, a moving input whose own speckle renews (what the stage's renewal
costs shows only then; stop 52):

    python research/engine_ratio.py --a lq2hq_fast --a-stage-at 3a85f0e --b lq2hq_fast --real-video clarius-ocular

``--marks``: every frame with labels, an orientation dot and depth ticks beside its view, as a scanner's or a
simulator's display draws them (``phantom.with_marks``); the frames each stage gave no grain are counted.

    python research/engine_ratio.py --a lq2hq_fast --a-stage-at 0e9a446 --b lq2hq_fast --moving --marks --sizes 512
"""
import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from usnst.engines.base import EngineOptions
from usnst.engines.beam_speckle import BeamSpeckle
from usnst.engines.registry import load_engine
from usnst_io.media import to_float, to_uint8
from usnst_stream.phantom import PhantomRenderer, with_marks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", required=True, help="first model (embedded name or checkpoint)")
    ap.add_argument("--b", required=True, help="second model")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--sizes", default="512")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--moving", action="store_true", help="a moving probe's frames, not one frame repeated")
    ap.add_argument("--real-video", default=None, metavar="ID",
                    help="the frames of this real recording's first video (`usnst real-scanners` fills the cache)")
    ap.add_argument("--marks", action="store_true", help="labels, a dot and depth ticks beside every frame's view")
    ap.add_argument("--a-screen-grain", action="store_true", help="model A's fixed grain drawn on the screen")
    ap.add_argument("--a-kept-grain", action="store_true", help="model A's anchored scatterers never renewed")
    ap.add_argument("--a-stage-at", default=None, metavar="COMMIT",
                    help="model A run by engines/beam_speckle.py as of this git commit")
    args = ap.parse_args()
    if args.a_screen_grain and args.a_kept_grain:
        ap.error("--a-screen-grain and --a-kept-grain are two different A's: give one")
    a_name = args.a + (" (grain on the screen)" if args.a_screen_grain else " (scatterers kept)" if args.a_kept_grain
                       else f" (stage at {args.a_stage_at})" if args.a_stage_at else "")
    engines = {a_name: load_engine(args.a, args.backend, EngineOptions()),
               args.b: load_engine(args.b, args.backend, EngineOptions())}
    if args.a_screen_grain:
        engines[a_name].stage = BeamSpeckle(engines[a_name].stage.config, anchored=False)
    if args.a_kept_grain:
        engines[a_name].stage.renew = 0  # kept through resets: the stage is rebuilt with its own renewal
    if args.a_stage_at:
        engine = engines[a_name]
        engines[a_name] = stage_at(args.a_stage_at).SpeckledEngine(engine.inner, engine.stage.config, engine.options)
    for size in (int(s) for s in args.sizes.split(",")):
        if args.real_video:
            frames = [cv2.resize(f, (size, size), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
                      for f in real_video(args.real_video, args.frames)]
        else:
            renderer = PhantomRenderer(size, size, seed=1)
            frames = [to_float(to_uint8(renderer.render(i / 30 if args.moving else 0.0).lq))
                      for i in range(args.frames if args.moving else 1)]
        if args.marks:
            frames = [with_marks(frame) for frame in frames]
        times = {name: [] for name in engines}
        for engine in engines.values():
            engine.infer(frames[0])  # warm-up (and the fixed noise planes for this size)
        for i in range(args.frames):
            for name, engine in engines.items():
                t0 = time.perf_counter()
                engine.infer(frames[i % len(frames)])
                times[name].append((time.perf_counter() - t0) * 1e3)
        p50 = {name: float(np.median(t)) for name, t in times.items()}
        ungrained = {name: f", {engine.stage.skipped} of {args.frames + 1} frames without grain" if args.marks else ""
                     for name, engine in engines.items()}
        print(f"{size}x{size} {args.backend}: " + ", ".join(f"{n} p50 {p50[n]:.1f} ms ({1e3 / p50[n]:.1f} fps)"
                                                             f"{ungrained[n]}" for n in engines)
              + f"; ratio b/a {p50[args.b] / p50[a_name]:.2f}", flush=True)


def real_video(recording: str, frames: int) -> list[np.ndarray]:
    """The first video of a real recording, cleaned as `usnst real-scanners` cleans it (grey uint8, 256 rows)."""
    from real_motion import real_sequences  # research/, beside this script

    cache = Path.home() / ".cache" / "usnst" / "real-scanners"
    for rec, _, _, _, video in real_sequences(cache, frames):
        if rec == recording:
            return video
    raise SystemExit(f"--real-video {recording}: not a moving recording (research/real_motion.py MOVING)")


def stage_at(commit: str):
    """engines/beam_speckle.py as of ``commit``, imported as a module of its own beside today's."""
    source = subprocess.run(["git", "show", f"{commit}:engines/beam_speckle.py"], check=True, capture_output=True,
                            text=True, cwd=Path(__file__).resolve().parents[1]).stdout
    path = Path(tempfile.mkdtemp()) / f"beam_speckle_{commit}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    main()
