"""Training triptychs that teach a net to leave a real scanner's frame alone (issue 27 item 5; research).

A net trained on the phantom alone maps whatever it is sent to the phantom's anatomy: on real scanner frames as the
input (`real_invented.py`) `lq2hq_fast` brightens or darkens patches of 20–26 px where the frame is uniform. A frame
that already looks like a scanner's has nothing to be made more real at the anatomy's scale, so its right output is
itself. This writes each real *training* recording's frames as LQ = HQ triptychs (a blank label panel), at most
``--per-recording`` evenly spread, for mixing into a net's training; the held-out recordings (other makers) stay
unseen for the figures.

    usnst real-scanners --out data/real --height 256
    python research/real_identity.py --real data/real --out data/real_identity --per-recording 16
"""
import argparse
from pathlib import Path

import cv2
import numpy as np

from usnst.offline.real_scanners import recording_frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", required=True, help="a set made by `usnst real-scanners`; only its train/ side is read")
    ap.add_argument("--out", required=True)
    ap.add_argument("--per-recording", type=int, default=16)
    ap.add_argument("--crop", type=int, default=128, help="the trainer's crop: narrower frames are left out")
    args = ap.parse_args()
    frames, groups, names = recording_frames(Path(args.real) / "train", args.per_recording)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kept = [(i, f, k) for i, (f, k) in enumerate(zip(frames, groups)) if min(f.shape) >= args.crop]
    for i, frame, k in kept:
        cv2.imwrite(str(out / f"{names[k]}_{i:04d}.png"), np.hstack([frame, frame, np.zeros_like(frame)]))
    print(f"{len(kept)} triptychs of {len(names)} recordings ({len(frames) - len(kept)} narrower than the crop "
          f"left out) -> {out}")


if __name__ == "__main__":
    main()
