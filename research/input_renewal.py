"""How much of a hand-held scanner's renewal each input's own speckle shows (``engines.speckle_renewal``): real
scanners' videos beside the phantom's moving views, as the stage measures it frame by frame (stop 52).

    usnst real-scanners --out data/real --height 256        # fills the cache with the real videos
    python research/input_renewal.py --seed 70000 -n 4      # validation scenes (what the share was set on)

Each row: the share ``q`` = the input's measured renewal rate / a scanner's (``RENEW_DEPTH_SHARE`` of the view's
depth), on every frame after the fifth of each sequence (the rate needs a few frames of evidence). Real rows: every
moving recording's first ``--frames`` frames, each video its own stream. Phantom rows: ``-n`` scenes × two starts
(the sweep's fastest moments, as the motion tables take them) × ``--length`` frames at 25 fps, the LQ input (``--hq``:
the HQ frames, what `hq2clinical` takes), every probe view, both formations and anatomies.
"""
import argparse
from pathlib import Path

import numpy as np
from real_motion import real_sequences

from usnst.engines.beam_speckle import RENEW_DEPTH_SHARE, BeamSpeckle, BeamSpeckleConfig
from usnst_io.media import to_uint8
from usnst_stream.phantom import ANATOMIES, FORMATIONS, PhantomRenderer, probe

VIEWS = (None, "linear", "trapezoid", "curvilinear", "phased")
SKIP = 5  # frames of each sequence before its share counts


def shares(frames: list[np.ndarray]) -> np.ndarray:
    """The share of a scanner's renewal rate the input shows after each frame (grey uint8), read off an anchored
    stage run on the frames as a stream does (its fan, its motion estimate, its view's mask)."""
    stage = BeamSpeckle(BeamSpeckleConfig(), anchored=True)
    planes = [np.random.default_rng(0).standard_normal(stage.plane_shape).astype(np.float32) for _ in range(2)]
    out = []
    for frame in frames:
        frame = frame.astype(np.float32) / 255.0
        stage.apply(frame, frame, planes)
        depth = stage.fan.depth_px if stage.fan is not None else 0.85 * frame.shape[0]  # no view fitted yet
        out.append(stage.renewal.rate * RENEW_DEPTH_SHARE * depth)
    return np.array(out[SKIP:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "usnst" / "real-scanners")
    ap.add_argument("--frames", type=int, default=96, help="frames read from the start of each real video")
    ap.add_argument("--seed", type=int, default=70000, help="first phantom scene (never a test seed to choose on)")
    ap.add_argument("-n", type=int, default=4, help="phantom scenes per view")
    ap.add_argument("--length", type=int, default=17, help="frames per phantom sequence")
    ap.add_argument("--hq", action="store_true", help="the phantom's HQ frames as the input instead of LQ")
    args = ap.parse_args()
    print("| input | split / view | q: p10 | median | p90 | max |")
    print("|---|---|---|---|---|---|")
    for rec, name, kind, split, frames in real_sequences(args.cache, args.frames):
        q = shares(frames)
        print(f"| real: {rec}, {name} | {split} | {np.percentile(q, 10):.2f} | {np.median(q):.2f} | "
              f"{np.percentile(q, 90):.2f} | {q.max():.2f} |", flush=True)
    panel = "hq" if args.hq else "lq"
    for formation in FORMATIONS:
        for anatomy in ANATOMIES:
            for view in VIEWS:
                q = []
                for i in range(args.n):
                    renderer = PhantomRenderer(256, 256, seed=args.seed + i, formation=formation, anatomy=anatomy,
                                               **({} if view is None else {"geometry": probe(view)}))
                    for t0 in (0.0, 5.5):
                        frames = [to_uint8(getattr(renderer.render(t0 + k / 25), panel)) for k in range(args.length)]
                        q.append(shares(frames))
                q = np.concatenate(q)
                print(f"| phantom {panel.upper()}: {formation}, {anatomy} | {view or 'sector'} | "
                      f"{np.percentile(q, 10):.2f} | {np.median(q):.2f} | {np.percentile(q, 90):.2f} | "
                      f"{q.max():.2f} |", flush=True)


if __name__ == "__main__":
    main()
