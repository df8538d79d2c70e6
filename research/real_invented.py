"""Invented structure on real scanner frames given as the input: a formation no one here generated, whose held-out
makers no model here was trained on (issue 27 item 5). A simulator whose frames already look like a scanner's is the hardest case for
a model that learnt what to change on the phantom's: whatever it changes at the anatomy's scale beyond a grey map is
structure the frame does not have.

    usnst real-scanners --out data/real --height 256
    python research/real_invented.py --real data/real --models lq2hq_fast,lq2hq

Each recording (both sides of the set, or ``--sides``: since stop 49 `lq2hq_fast`'s net, and `lq2real` on it, and
since stop 50 `lq2hq`'s trained on the training side's frames, so their evidence is ``--sides held_out``) gives at most ``--per-recording``
frames, evenly spread; the row is the mean share over recordings (each recording weighs the same) and the widest blob
over all frames. There is no HQ of these frames, so no HQ-vs-LQ reference: the figure is read against the model's own
figure on the phantom's formations (realism_table.py --invented-only) and against zero.
"""
import argparse
from pathlib import Path

import numpy as np
from real_table import recordings

from usnst.engines.base import EngineOptions
from usnst.engines.registry import load_engine
from usnst.offline.realism import invented_structure
from usnst_io.media import to_float, to_uint8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", required=True, help="a set made by `usnst real-scanners` (train/ and held_out/)")
    ap.add_argument("--models", required=True, help="comma-separated embedded names or checkpoints")
    ap.add_argument("--per-recording", type=int, default=8)
    ap.add_argument("--noise", default="frame")
    ap.add_argument("--sides", default="train,held_out",
                    help="which sides of the set: a net that trained on the train side's frames is read on held_out")
    args = ap.parse_args()
    frames, groups, names = [], [], []
    for side in args.sides.split(","):
        f, g, n = recordings(Path(args.real) / side, args.per_recording)
        frames += f
        groups += [k + len(names) for k in g]
        names += n
    print(f"invented structure on real scanner frames as the input: {len(frames)} frames of {len(names)} recordings "
          f"(≤ {args.per_recording} each), noise {args.noise}; share of the sector (mean over recordings) / widest "
          f"blob px (over frames) / frames the speckle stage skipped")
    print("| model | share | widest blob | skipped | worst recording |\n|---|---|---|---|---|")
    for name in args.models.split(","):
        engine = load_engine(name, "torch", EngineOptions(noise=args.noise, seed=0))
        found, skipped = [], 0
        for frame in frames:
            engine.reset()  # each frame its own view: a fan fitted to one recording is no prior for the next
            found.append(invented_structure(to_uint8(engine.infer(to_float(frame))), frame))
            skipped += getattr(getattr(engine, "stage", None), "skipped", 0)
        per = {k: np.mean([f["share"] for f, g in zip(found, groups) if g == k]) for k in sorted(set(groups))}
        worst = max(per, key=per.get)
        print(f"| {name} | {np.mean(list(per.values())):.2%} | {max(f['largest_blob_px'] for f in found):.1f} | "
              f"{skipped} | {names[worst]} {per[worst]:.1%} |", flush=True)


if __name__ == "__main__":
    main()
