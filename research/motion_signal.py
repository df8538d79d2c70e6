"""What the stream's motion estimate is made from: the input frames as sent, or a cleaner picture of the anatomy
(issue 27; stop 46). Not installed: no signal but the frames holds on every probe kind.

The stage places its anchored grain by one rigid motion of the view estimated from the frames
(``engines.tissue_motion``). At 512² the grain placed so followed the anatomy in 36 % of windows over 8 frames where
the phantom's poses gave 98 % (stop 45). This script asks where that comes from and whether another signal would
serve: on moving phantom probes (held-out scenes; domain: **phantom, moving sequence**, the phantom's true motion),
for each signal the estimate can be made from,

- ``frame``: the input as sent (what ships: shrunk by area to the working size, blurred σ 1 working px);
- ``median``: the same, median-filtered over 5 working px instead of blurred (edges kept, the input's coarse
  mottling taken out);
- ``net``: the model's output without its grain (a noise-off engine of the same model): the anatomy without the
  input's re-formed speckle and electronic noise;
- ``scaled``: the frames, with the working side grown with the frame beyond 256 px (the same shrinking factor at every
  size; frames up to 256 px as shipped); ``scaled-margin``: its margin along the view's edges grown too,

it prints (1) the estimate's placement error k frames after the first (median over the first HQ's tissue pixels of
how far the estimate puts a pixel from where its tissue was, px of the frame) and (2) the texture motion of the
model's stream output with its scatterers never renewed, so that placement alone is measured (follows the anatomy /
correlation after motion / at zero shift, ``realism_table.motion_row``), beside HQ's.

    python research/motion_signal.py --views sector:256,sector:512,linear:128,trapezoid:256,curvilinear:256 \
        --signals frame,median,net
    python research/motion_signal.py --views sector:512,curvilinear:512,trapezoid:512 --signals frame,scaled,scaled-margin

A view whose anatomy moves beyond the measure's ± 8 px in ``--lag`` frames (the phantom's linear and trapezoid
sweeps at 512²) has no windows: its row shows the placement error alone.
"""
import argparse

import cv2
import numpy as np
from realism_table import LOOK, MOTION_FPS, MOTION_LAG, motion_row, moving_probes

from usnst.engines import tissue_motion as motion
from usnst.engines.acoustics import ECHO_LEVEL
from usnst.engines.base import EngineOptions
from usnst.engines.registry import load_engine
from usnst.engines.tissue_motion import TissueMotion
from usnst.offline.realism import tissue_mask
from usnst_io.media import to_float, to_uint8
from usnst_stream.phantom import PhantomRenderer, probe

SIGNALS = ("frame", "median", "net", "scaled", "scaled-margin")


def working_frame(frame: np.ndarray, flat_face: bool, median: bool = False, grow: bool = False,
                  margin_too: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """TissueMotion._shrink's working frame and mask, changed as asked: ``median`` filtered over 5 working px instead
    of blurred σ 1; ``grow``: the working side grown with the frame beyond 256 px (``margin_too``: the margin as well)."""
    side, edge_px = (motion.FLAT_FACE_WORK_SIDE, motion.FLAT_FACE_EDGE_PX) if flat_face else (motion.WORK_SIDE,
                                                                                                motion.EDGE_PX)
    h, w = frame.shape
    factor = max(1.0, max(h, w) / 256) if grow else 1.0
    s = min(1.0, side * factor / max(h, w))
    small = cv2.resize(frame.astype(np.float32), (max(8, round(w * s)), max(8, round(h * s))),
                       interpolation=cv2.INTER_AREA)
    small = cv2.medianBlur(small, 5) if median else cv2.GaussianBlur(small, (0, 0), 1.0)
    edge_px = round(edge_px * factor) if margin_too else edge_px
    mask = cv2.erode((small > ECHO_LEVEL).astype(np.uint8), np.ones((2 * edge_px + 1,) * 2, np.uint8))
    return small, mask


def variant(**how) -> type:
    """TissueMotion with its working frame made by ``working_frame(…, **how)``."""

    class Variant(TissueMotion):
        @staticmethod
        def _shrink(frame: np.ndarray, flat_face: bool) -> tuple[np.ndarray, np.ndarray]:
            return working_frame(frame, flat_face, **how)

    return Variant


class SignalMotion:
    """A TissueMotion fed ``signal(frame)`` in place of the frame."""

    def __init__(self, inner: TissueMotion, signal):
        self.inner, self.signal = inner, signal

    def update(self, frame, pose=None, flat_face=False):
        return self.inner.update(self.signal(frame), pose, flat_face)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def estimator(name: str, model: str):
    """(a fresh TissueMotion-like object) for the signal ``name``."""
    if name == "frame":
        return TissueMotion
    if name == "median":
        return variant(median=True)
    if name.startswith("scaled"):
        return variant(grow=True, margin_too=name == "scaled-margin")
    net = load_engine(model, "torch", EngineOptions(noise="off", seed=0))
    return lambda: SignalMotion(TissueMotion(), lambda frame: net.infer(frame).astype(np.float32))


def placement_errors(make, n: int, size: int, seeds: list[int], kind: str | None, lag: int) -> np.ndarray:
    """Per frame 1…lag after the first: the mean over sequences of the median placement error (px)."""
    errors = []
    for seed in seeds:
        for i in range(n):
            renderer = PhantomRenderer(size, size, seed=seed + i, **LOOK,
                                       **({} if kind is None else {"geometry": probe(kind)}))
            for t0 in (0.0, 5.5):
                times = [t0 + k / MOTION_FPS for k in range(lag + 1)]
                first = renderer.render(t0)
                mask = tissue_mask(to_uint8(first.hq), None if kind is None else first.seg)
                ys, xs = np.nonzero(mask)
                p0 = np.stack([xs, ys], 1).astype(np.float64)
                tracker, row = make(), []
                tracker.update(first.lq, flat_face=kind in ("linear", "trapezoid"))
                for t in times[1:]:
                    to_first = tracker.update(renderer.render(t).lq, flat_face=kind in ("linear", "trapezoid"))
                    moved = p0 + renderer.displacement(t0, t)[ys, xs]
                    back = moved @ to_first[:2, :2].T + to_first[:2, 2]
                    row.append(float(np.median(np.hypot(*(back - p0).T))))
                errors.append(row)
    return np.mean(errors, axis=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--views", default="sector:256,sector:512,linear:128,trapezoid:256,curvilinear:256",
                    help="comma-separated probe kind (sector: the original) and frame side")
    ap.add_argument("--model", default="lq2hq_fast")
    ap.add_argument("--signals", default=",".join(SIGNALS))
    ap.add_argument("--seeds", default="70000", help="first scene seeds (validation: 70000, 100000)")
    ap.add_argument("-n", type=int, default=6, help="scenes per seed (two sequences each)")
    ap.add_argument("--lag", type=int, default=MOTION_LAG)
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    signals = args.signals.split(",")
    if set(signals) - set(SIGNALS):
        ap.error(f"--signals: choose from {', '.join(SIGNALS)}")
    print("| view | signal | placement error after 1 / 2 / 4 / 8 frames (px) | kept grain: follows / after motion / "
          "at zero | HQ |")
    print("|---|---|---|---|---|")
    for view in args.views.split(","):
        kind, side = view.split(":")
        kind, side = (None if kind == "sector" else kind), int(side)
        sequences = moving_probes(args.n, side, seeds, kind, args.lag)
        hq = motion_row("HQ", sequences)
        for name in signals:
            make = estimator(name, args.model)
            errors = placement_errors(make, args.n, side, seeds, kind, args.lag)
            engine = load_engine(args.model, "torch", EngineOptions(noise="fixed", seed=0))

            def reset(engine=engine, make=make):
                engine.reset()
                engine.stage.renew, engine.stage.motion = 0, make()  # placement alone: nothing renewed

            run = lambda frame, pose, engine=engine: to_float(to_uint8(engine.infer(frame)))
            run.reset = reset
            r = motion_row(name, sequences, run)
            shown = " / ".join(f"{errors[k - 1]:.2f}" for k in (1, 2, 4, 8) if k <= len(errors))
            print(f"| {kind or 'sector'} {side}² | {name} | {shown} | {r['following']:.0%} / {r['after_motion']:.2f} / "
                  f"{r['at_zero']:.2f} | {hq['following']:.0%} / {hq['after_motion']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
