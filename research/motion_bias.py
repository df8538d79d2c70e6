"""Where the stream's motion estimate errs on a fan, and whether a frame-to-frame step would steady it (issue 27;
stop 47). Not installed: nothing here changed the product.

Without poses the stage places its grain by one rigid motion per frame, estimated against a key frame
(``engines.tissue_motion``). On the phantom's phased and curvilinear views that estimate runs 10–12 % ahead of the
tissue after 32 frames, and from frame to frame it wobbles by a quarter of a pixel while the anatomy moves half a
pixel. This script separates the causes on moving phantom probes (held-out scenes; domain: **phantom, moving
sequence**, the phantom's true motion):

- ``lq``: the input as a stream sends it (what ships);
- ``hq``: the phantom's HQ frames instead (finer speckle, no electronic noise);
- ``lq-no-shadow``: LQ rendered with every label's attenuation set to the compensated average, so nothing casts a
  shadow or an enhancement along the beams (the phantom's physics changed for the experiment only);
- ``lq-warped``: the first LQ frame warped by the true motion, the view's edges kept still: the estimator's own bias
  when the picture moves exactly rigidly;
- ``step:A``: the shipped estimate blended with the last output carried one frame on by a frame-to-frame match (a
  complementary filter: the key frame's estimate weighs A, the step 1 − A; no lag, unlike a constant-speed filter,
  which real hand-held videos refused, docs/lab/lq2hq_fast.md).

Per view and signal: the estimate's share of the true motion over the tissue after ``--lag`` frames (1.00: exact;
above: ahead of the tissue), the placement error after 8 and ``--lag`` frames (median over tissue pixels, px), and
the per-frame slip of the grain over its tissue (how much the placement error changes from one frame to the next,
median over tissue pixels; p50 / p95 over frames).

    python research/motion_bias.py --views phased:256,curvilinear:256,sector:256,trapezoid:256,linear:256 \\
        --signals lq,hq,lq-no-shadow,lq-warped,step:0.3
"""
import argparse
import math
from contextlib import contextmanager, nullcontext

import cv2
import numpy as np
from realism_table import MOTION_FPS

from usnst.engines.tissue_motion import TissueMotion
from usnst.offline.realism import tissue_mask
from usnst_io.media import to_uint8
from usnst_stream import phantom
from usnst_stream.phantom import PhantomRenderer, probe

ECC = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)  # as the shipped estimator stops


@contextmanager
def no_shadows():
    """Every label attenuates as the time-gain compensation assumes: no shadow or enhancement along the beams."""
    saved = phantom._ATTEN.copy()
    phantom._ATTEN[:] = phantom._TGC
    try:
        yield
    finally:
        phantom._ATTEN[:] = saved


def euclidean(m: np.ndarray) -> np.ndarray:
    """(angle, tx, ty) of a 3×3 rigid motion."""
    return np.array([math.atan2(m[1, 0], m[0, 0]), m[0, 2], m[1, 2]])


def rigid(p: np.ndarray) -> np.ndarray:
    c, s = math.cos(p[0]), math.sin(p[0])
    return np.array([[c, -s, p[1]], [s, c, p[2]], [0.0, 0.0, 1.0]])


class Stepped:
    """The shipped TissueMotion's output blended (weight ``alpha``) with its own last output carried one frame on by
    an ECC match of this frame to the last, on the same working frames."""

    def __init__(self, alpha: float):
        self.alpha, self.inner = alpha, TissueMotion()
        self.last = None  # (working frame, its mask, the output then)
        self.step = np.eye(2, 3, dtype=np.float32)

    def update(self, frame: np.ndarray, flat_face: bool) -> np.ndarray:
        starts = self.inner.starts
        keyed = self.inner.update(frame, flat_face=flat_face)
        small, mask = self.inner._shrink(frame, flat_face)
        out = keyed
        if self.last is not None and self.inner.starts == starts:
            try:
                _, self.step = cv2.findTransformECC(small, self.last[0], self.step.copy(), cv2.MOTION_EUCLIDEAN, ECC,
                                                    self.last[1], 1)
                s = self.inner._scale
                carried = self.last[2] @ np.linalg.inv(s) @ np.vstack([self.step, [0, 0, 1]]) @ s
                out = rigid(self.alpha * euclidean(keyed) + (1 - self.alpha) * euclidean(carried))
            except cv2.error:
                pass
        self.last = (small, mask, out)
        return out


def sequences(kind: str | None, side: int, seeds: list[int], n: int, lag: int, source: str):
    """Per scene and start (t = 0 s and 5.5 s): the frames the estimator sees, the tissue pixels of the first HQ, and
    the true motion of the anatomy from the first frame to each later one."""
    for seed in seeds:
        for i in range(n):
            renderer = PhantomRenderer(side, side, seed=seed + i, **({} if kind is None else {"geometry": probe(kind)}))
            for t0 in (0.0, 5.5):
                times = [t0 + k / MOTION_FPS for k in range(lag + 1)]
                samples = [renderer.render(t) for t in times]
                motion = [renderer.displacement(t0, t) for t in times[1:]]
                mask = tissue_mask(to_uint8(samples[0].hq), None if kind is None else samples[0].seg)
                if source == "warped":  # the first frame moved rigidly by the truth; the view's edges stay
                    h, w = samples[0].lq.shape
                    cols, rows = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
                    back = [renderer.displacement(t, t0) for t in times[1:]]
                    frames = [samples[0].lq] + [cv2.remap(samples[0].lq, cols + b[..., 0], rows + b[..., 1],
                                                          cv2.INTER_LINEAR) * renderer.in_sector for b in back]
                else:
                    frames = [getattr(s, source) for s in samples]
                yield [f.astype(np.float32) for f in frames], mask, motion


def measure(kind: str | None, side: int, seeds: list[int], n: int, lag: int, signal: str) -> dict:
    source = {"hq": "hq", "lq-warped": "warped"}.get(signal, "lq")
    alpha = float(signal.split(":")[1]) if signal.startswith("step:") else None
    flat_face = kind in ("linear", "trapezoid")
    shares, at8, at_lag, slips = [], [], [], []
    with no_shadows() if signal == "lq-no-shadow" else nullcontext():
        for frames, mask, motion in sequences(kind, side, seeds, n, lag, source):
            ys, xs = np.nonzero(mask)
            p0 = np.stack([xs, ys], 1).astype(np.float64)
            if alpha is None:
                update = lambda f, tracker=TissueMotion(): tracker.update(f, flat_face=flat_face)
            else:
                update = lambda f, tracker=Stepped(alpha): tracker.update(f, flat_face)
            update(frames[0])
            last = np.zeros_like(p0)
            for k, (frame, true) in enumerate(zip(frames[1:], motion), 1):
                to_first = update(frame)
                d = true[ys, xs]
                back = (p0 + d) @ to_first[:2, :2].T + to_first[:2, 2]
                error = back - p0
                slips.append(float(np.median(np.hypot(*(error - last).T))))
                last = error
                if k == 8:
                    at8.append(float(np.median(np.hypot(*error.T))))
                if k == lag:
                    at_lag.append(float(np.median(np.hypot(*error.T))))
                    shares.append(float(np.sum((d - error) * d) / np.sum(d * d)))
    return {"share": np.mean(shares), "at8": np.mean(at8), "at_lag": np.mean(at_lag),
            "slip50": np.median(slips), "slip95": np.percentile(slips, 95)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--views", default="phased:256,curvilinear:256,sector:256,trapezoid:256,linear:256",
                    help="comma-separated probe kind (sector: the original) and frame side")
    ap.add_argument("--signals", default="lq,hq,lq-no-shadow,lq-warped,step:0.3")
    ap.add_argument("--seeds", default="70000,100000", help="first scene seeds (validation: 70000, 100000)")
    ap.add_argument("-n", type=int, default=3, help="scenes per seed (two sequences each)")
    ap.add_argument("--lag", type=int, default=32, help="frames after the first (25 fps)")
    args = ap.parse_args()
    if args.lag < 8:
        ap.error("--lag: at least 8 (the table reports frame 8)")
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"| view | signal | share of the true motion after {args.lag} frames | placement error after 8 / "
          f"{args.lag} frames (px) | slip per frame p50 / p95 (px) |")
    print("|---|---|---|---|---|")
    for view in args.views.split(","):
        kind, side = view.split(":")
        kind = None if kind == "sector" else kind
        for signal in args.signals.split(","):
            r = measure(kind, int(side), seeds, args.n, args.lag, signal)
            print(f"| {kind or 'sector'} {side}² | {signal} | {r['share']:.2f} | {r['at8']:.2f} / {r['at_lag']:.2f} | "
                  f"{r['slip50']:.2f} / {r['slip95']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
