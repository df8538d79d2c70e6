"""Would sharpening the stage's base buy back the anatomy a squared-error net and the base's low-pass soften? The base
(the net's output low-passed by ``base_sigma`` inside the image) is given back its own contrast at a wider scale,
``base + amount · (base − base low-passed by sigma)``, before the grey curve and the grain — an unsharp mask of the
anatomy, not of the grain. Each row is the same model and stage with one amount, the same grain per scene (frame
noise, one seed per scene), on the same held-out phantom scenes: SSIM to HQ, the invented-structure share (which
low-passes at 3 px: the band this sharpening works in), and optionally the tissue C2ST and the whole-sector C2ST.
Nothing here is in the product (docs/lab/whole_sector.md says why).

    python research/base_sharpen.py --models lq2hq_fast,lq2hq --amounts 0,0.6,1.0 --seeds 70000,100000 -n 12
    python research/base_sharpen.py --models lq2hq_fast --amounts 0,0.6 --looks gaussian/fetal --tissue-c2st
    python research/base_sharpen.py --models lq2hq_fast --amounts 0,0.6 --seeds 70000 -n 40 --looks gaussian/fetal \
        --sector-c2st --size 256
"""
import argparse

import cv2
import numpy as np
import realism_table as rt
from skimage.metrics import structural_similarity

from usnst.engines.base import EngineOptions
from usnst.engines.registry import load_engine
from usnst.offline.realism import C2STBudget, invented_structure
from usnst_io.media import to_float, to_uint8


def within(image: np.ndarray, region: np.ndarray, sigma: float) -> np.ndarray:
    """``image`` low-passed inside ``region`` only (normalised convolution, as the stage's base)."""
    num = cv2.GaussianBlur(image * region, (0, 0), sigma)
    return np.where(region > 0, num / np.maximum(cv2.GaussianBlur(region, (0, 0), sigma), 1e-6), 0.0)


def sharpen_base(engine, amount: float, sigma: float) -> None:
    """Replace the engine's stage's ``base`` on this instance by its sharpened form (amount 0: the stage's own).
    A reset makes the stage anew: call it after each."""
    stage = engine.stage
    own = type(stage).base.__get__(stage)

    def base(styled, region):
        b = own(styled, region)
        if amount == 0:
            return b
        m = region.astype(np.float32)
        return np.where(m > 0, b + amount * (b - within(b, m, sigma)), 0.0).astype(np.float32)
    stage.base = base


def outputs(engine, data, amount: float, sigma: float) -> list[np.ndarray]:
    found = []
    for i, d in enumerate(data):
        engine.reset(f"scene-{i}")  # the same grain per scene in every row
        sharpen_base(engine, amount, sigma)
        found.append(to_uint8(engine.infer(to_float(d[0]))))
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="lq2hq_fast")
    ap.add_argument("--amounts", default="0,0.6", help="comma-separated unsharp amounts (0: the shipped stage)")
    ap.add_argument("--sigma", type=float, default=3.0, help="px at the net's scale: the scale whose contrast is restored")
    ap.add_argument("--seeds", default="70000,100000", help="first seeds (validation by default), -n scenes each")
    ap.add_argument("-n", type=int, default=12)
    ap.add_argument("--size", type=rt.frame_size, default=(256, 256))
    ap.add_argument("--looks", default="rf/fetal,gaussian/fetal,rf/abdominal", help="formation/anatomy pairs")
    ap.add_argument("--tissue-c2st", action="store_true", help="also the tissue C2ST (4 classifiers; 256² only)")
    ap.add_argument("--sector-c2st", action="store_true", help="also the whole-sector C2ST (4 classifiers)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    amounts = [float(a) for a in args.amounts.split(",")]
    print(f"base sharpened at σ {args.sigma:g} px; {args.n} scenes per seed set ({args.seeds}), "
          f"{args.size[0]}x{args.size[1]}, frame noise. Domain: phantom")
    print("| look | model | amount | SSIM vs HQ (identity) | invented (HQ vs LQ) | tissue C2ST | whole-sector C2ST |")
    print("|---|---|---|---|---|---|---|")
    for look in args.looks.split(","):
        formation, anatomy = look.split("/")
        rt.LOOK.update(formation=formation, anatomy=anatomy)
        data = [d for s in seeds for d in rt.scenes(args.n, args.size, s)]
        identity = np.mean([structural_similarity(d[0], d[1]) for d in data])
        hq_lq = np.mean([invented_structure(d[1], d[0])["share"] for d in data])
        target = None
        if args.sector_c2st:
            other = [d for s in seeds for d in rt.scenes(args.n, args.size, s + rt.OTHER_SCENES)]
            target = rt.sector_patches([d[1] for d in other], [d[2] for d in other])
        for name in args.models.split(","):
            engine = load_engine(name, "torch", EngineOptions(noise="frame", seed=0))
            for amount in amounts:
                found = outputs(engine, data, amount, args.sigma)
                ssim = np.mean([structural_similarity(o, d[1]) for o, d in zip(found, data)])
                invented = np.mean([invented_structure(o, d[0])["share"] for o, d in zip(found, data)])
                tissue = sector = "—"
                if args.tissue_c2st:
                    r = rt.row(name, found, data, C2STBudget(repeats=4))
                    tissue = f"{rt.c2st_cell(r)} (m {r['nakagami_m']:.2f}, FWHM {r['fwhm_axial_px']:.2f} / " \
                             f"{r['fwhm_lateral_px']:.2f})"
                if target is not None:
                    sector = "{:.2f} ± {:.2f}".format(*rt.sector_c2st(found, [d[2] for d in data], target, 4))
                print(f"| {look} | {name} | {amount:g} | {ssim:.4f} ({identity:.4f}) | {invented:.2%} ({hq_lq:.2%}) | "
                      f"{tissue} | {sector} |", flush=True)


if __name__ == "__main__":
    main()
