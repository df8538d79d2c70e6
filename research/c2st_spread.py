"""How precise a C2ST figure is: one model's C2ST from many classifiers (seeds 0…, each holding out other scenes) on
the test scenes of several seed ranges together — the realism report uses 24 scenes and the mean of 3 classifiers.

    python research/c2st_spread.py --models lq2hq_fast,runs/q1/model.pt --seeds 50000,60000 --repeats 8
    python research/c2st_spread.py --models lq2hq_fast --repeats 2 --view rank     # the grain's shape alone

Measured (stop 18): lq2hq_fast 0.80 (classifiers 0.64–0.94), the spectrum-loss stage q1 0.84 (0.66–0.91), on 48
scenes; a mean of 3 on 24 scenes moves by up to ±0.1 with the split.
"""
import argparse

from realism_table import scenes

from usnst.engines.base import EngineOptions
from usnst.engines.registry import load_engine
from usnst.offline.realism import (
    PATCH,
    C2STBudget,
    phase_randomised_view,
    rank_view,
    realism_report,
)
from usnst_io.media import to_float, to_uint8

VIEWS = {"as is": None, "rank": rank_view, "phase-randomised": phase_randomised_view}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="lq2hq_fast", help="comma-separated embedded names or checkpoints")
    ap.add_argument("--seeds", default="50000,60000", help="first scene seed of each set of -n scenes")
    ap.add_argument("-n", type=int, default=24, help="scenes per seed range")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=8, help="classifiers (seeds 0 … repeats − 1)")
    ap.add_argument("--view", choices=sorted(VIEWS), default="as is",
                    help="what the classifiers see of each patch: as is, its ranks only (the grain's shape) or its "
                         "power spectrum with new phases (second-order texture only)")
    args = ap.parse_args()
    data = [d for s in args.seeds.split(",") for d in scenes(args.n, args.size, int(s))]
    budget = C2STBudget(repeats=args.repeats)  # classifier k: seed k, its own held-out scenes
    print(f"{len(data)} scenes, {PATCH}² tissue patches ({args.view}), {args.repeats} classifiers of "
          f"{budget.steps} steps")
    for name in args.models.split(","):
        engine = load_engine(name, "torch", EngineOptions(seed=0))
        outputs = [to_uint8(engine.infer(to_float(d[0]))) for d in data]
        r = realism_report(outputs, [d[1] for d in data], [d[2] for d in data], budget=budget, view=VIEWS[args.view])
        print(f"{name}: mean {r['c2st']:.3f}, standard error {r['c2st_se']:.3f}, "
              f"classifiers {' '.join(f'{c:.2f}' for c in r['c2st_runs'])}", flush=True)


if __name__ == "__main__":
    main()
