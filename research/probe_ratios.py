"""Could the stage read the target's grain off its input? Per view (two image formations × the original sector and
the four probe kinds), how HQ's speckle relates to the LQ input's and to a net's own output: axial and lateral FWHM,
Nakagami m and grain std, medians over held-out scenes' tissue. A rule such as "HQ's grain is k times the input's"
holds only if the ratio is one number across the views. Domain: phantom (both formations); nothing here is in the
product (docs/lab/second_formation.md).

    python research/probe_ratios.py --seed 70000 -n 6 --model lq2hq_fast
"""
import argparse

import numpy as np
import realism_table as rt

from usnst.engines.base import EngineOptions
from usnst.engines.registry import load_engine
from usnst.offline.realism import speckle, speckle_fwhm, tissue_mask, tissue_nakagami
from usnst_io.media import to_float, to_uint8

KINDS = (None, "curvilinear", "phased", "linear", "trapezoid")  # None: the phantom's original sector


def grain(image: np.ndarray, mask: np.ndarray) -> list[float]:
    """Axial FWHM, lateral FWHM (px), Nakagami m, grain std (grey) inside ``mask``."""
    return [*speckle_fwhm(image, mask), tissue_nakagami(image, mask), float(speckle(image)[mask].std())]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=70000, help="first scene seed (validation by default)")
    ap.add_argument("-n", type=int, default=6)
    ap.add_argument("--model", default="lq2hq_fast", help="whose net (before its stage) is measured beside")
    args = ap.parse_args()
    net = load_engine(args.model, "torch", EngineOptions(noise="off", seed=0)).inner
    print(f"{args.n} scenes per view (seeds {args.seed}…), 256², tissue of each scene's labels; the net: {args.model}'s, "
          "before its stage. Domain: phantom")
    print("| formation | view | FWHM ax / lat px: LQ, HQ, net | HQ/LQ ax, lat | HQ/net ax, lat | m LQ, HQ (HQ/LQ) | "
          "std LQ, HQ |")
    print("|---|---|---|---|---|---|---|")
    for formation in ("gaussian", "rf"):
        rt.LOOK.update(formation=formation)
        for kind in KINDS:
            rows = {"lq": [], "hq": [], "net": []}
            for lq, hq, seg, _ in rt.scenes(args.n, 256, args.seed, probe_kind=kind):
                mask = tissue_mask(hq, seg)
                rows["lq"].append(grain(lq, mask))
                rows["hq"].append(grain(hq, mask))
                rows["net"].append(grain(to_uint8(net.infer(to_float(lq))), mask))
            lq, hq, nt = (np.nanmedian(np.array(rows[k]), axis=0) for k in ("lq", "hq", "net"))
            print(f"| {formation} | {kind or 'sector'} | {lq[0]:.2f} / {lq[1]:.2f}, {hq[0]:.2f} / {hq[1]:.2f}, "
                  f"{nt[0]:.2f} / {nt[1]:.2f} | {hq[0] / lq[0]:.2f}, {hq[1] / lq[1]:.2f} | {hq[0] / nt[0]:.2f}, "
                  f"{hq[1] / nt[1]:.2f} | {lq[2]:.2f}, {hq[2]:.2f} ({hq[2] / lq[2]:.2f}) | {lq[3]:.1f}, {hq[3]:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
