"""Would the stream grain's renewal fit real scanners better per second than per path? (stop 42; `Engine.infer_at`
takes no frame time, so a time-based renewal would need one.)

The formed grain's scatterers renew in proportion to the path the tissue moves (`BeamSpeckle.renewed`, coherence
exp(−path / (share · depth))). This adds, on every frame whose tissue moved, a renewal per second of the video's own
frame interval (coherence exp(−Δt / τ)), and scores each (share, τ) as the renewal length was chosen at stop 41: the
mean gap between the output's and the video's own best match (research/real_motion.py) over pairs 2 and 8 frames
apart, on the training-split Butterfly videos (13–16 frames/s) and the held-out Clarius ones (24–25 frames/s, so a
per-second term is checked at another frame rate).

    python research/renewal_time.py --variants 0.03/0,0/1.0,0.045/2.0     # share/τ in s; 0: that term off
"""
import argparse
import math
import re
from pathlib import Path

import numpy as np
import real_motion as rm

from usnst.engines import beam_speckle
from usnst.engines.base import EngineOptions
from usnst.engines.registry import load_engine

FRAME_S = [0.0]  # the video's frame interval, for the patched renewal
TAU_S = [math.inf]
_renewed = beam_speckle.BeamSpeckle.renewed


def renewed_in_time_too(self, planes, shape, posed):
    """The stage's renewal, then, on a frame whose tissue moved, fresh scatterers for the time one frame lasts."""
    before = self._field
    field = _renewed(self, planes, shape, posed)
    if field is before or before is None or TAU_S[0] == math.inf:
        return field
    keep = math.exp(-FRAME_S[0] / TAU_S[0])
    rows, cols = planes[0].shape[-2:]
    offset = (int(self._rng.integers(1, rows)), int(self._rng.integers(1, cols)))
    self._field = [(keep * f + math.sqrt(1 - keep * keep) * np.roll(p, offset, axis=(-2, -1))).astype(np.float32)
                   for f, p in zip(field, planes)]
    return self._field


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "usnst" / "real-scanners")
    ap.add_argument("--model", default="lq2hq_fast")
    ap.add_argument("--variants", default="0.03/0,0/1.0,0.045/2.0", help="share/τ pairs, comma-separated (0: off)")
    args = ap.parse_args()
    variants = [tuple(float(x) for x in v.split("/")) for v in args.variants.split(",")]
    if not all(len(v) == 2 and 0 <= v[0] <= 1 and 0 <= v[1] <= 60 for v in variants):
        raise SystemExit("--variants: share/τ pairs, share in [0, 1], τ in [0, 60] s")
    beam_speckle.BeamSpeckle.renewed = renewed_in_time_too
    real = [r for r in rm.real_sequences(args.cache, 96) if r[0].startswith(("butterfly", "clarius"))]
    own = {r[1]: [rm.measured([r[4]], [r[4]], lag, True)["best_match"] for lag in (2, 8)] for r in real}
    print("| share of depth | τ (s) | gap, Butterfly (train) | gap, Clarius (held out) |\n|---|---|---|---|")
    for share, tau in variants:
        TAU_S[0] = tau or math.inf
        gaps = {"train": [], "held_out": []}
        for _, label, _, split, frames in real:
            FRAME_S[0] = 1.0 / float(re.search(r"(\d+) fps", label).group(1))
            engine = load_engine(args.model, "torch", EngineOptions(noise="fixed", seed=0))
            engine.stage.renew = share or 1e9  # 0: no renewal by path
            out = rm.streamed(engine, [frames])
            best = [rm.measured([frames], out, lag, True)["best_match"] for lag in (2, 8)]
            gaps[split] += [abs(a - b) for a, b in zip(best, own[label])]
        print(f"| {share or 'off'} | {tau or 'off'} | {np.mean(gaps['train']):.3f} | {np.mean(gaps['held_out']):.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
