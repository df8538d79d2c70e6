"""Phantom views with a display's marks beside them: does the beam-speckle stage fit the view it fits without them?

Every probe kind at 256², 512² and 1000×1386, both image formations, LQ and HQ panels of one scene each; the marks
(`phantom.with_marks`: labels in the four corners, an orientation dot, depth ticks down the right side, drawn only
where they stay clear of the view's echo) added to each. A fit is "the same" within fitting noise of the unmarked
frame's fit (``close_to``: 1.5 px, 0.5°), as a stream keeps its view. Domain: phantom (the marks are ours too).

    python research/marked_views.py --stage-at 0e9a446    # beside the stage's code before stop 48
"""
import argparse
import collections

from engine_ratio import stage_at

from usnst.engines import beam_speckle
from usnst_stream.phantom import PROBES, render_scene, with_marks


def outcome(module, marked, clean) -> str:
    try:
        view = module.fit_fan(marked)
    except module.NoFan:
        return "refused"
    view = getattr(beam_speckle, type(view).__name__)(**view.__dict__)  # today's class, to compare
    return "same view" if clean is not None and view.close_to(clean) else "another view"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=70003, help="the scene (validation seeds: never test seeds)")
    ap.add_argument("--stage-at", default=None, metavar="COMMIT", help="also the stage's fit as of this commit")
    args = ap.parse_args()
    stages = {"this code": beam_speckle}
    if args.stage_at:
        stages[args.stage_at] = stage_at(args.stage_at)
    tally = {s: collections.Counter() for s in stages}
    for size in ((256, 256), (512, 512), (1000, 1386)):
        for kind in (None, *PROBES):
            for formation in ("gaussian", "rf"):
                sample = render_scene(args.seed, 0, *size, "default", probe_kind=kind, formation=formation)
                for frame in (sample.lq, sample.hq):
                    clean = beam_speckle.fit_fan(frame)
                    marked = with_marks(frame)
                    for s, module in stages.items():
                        tally[s][(size[0], outcome(module, marked, clean))] += 1
    kinds = ("same view", "another view", "refused")
    print("| stage | frame | " + " | ".join(kinds) + " |\n|---|---|---|---|---|")
    for s, counts in tally.items():
        for side in (256, 512, 1000):
            print(f"| {s} | {side if side < 1000 else '1000×1386'} | "
                  + " | ".join(str(counts[(side, k)]) for k in kinds) + " |")


if __name__ == "__main__":
    main()
