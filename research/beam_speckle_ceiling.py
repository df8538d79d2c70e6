"""How far can a way of *forming* speckle go, whatever net predicts the anatomy? Each phantom scene's ideal mean grey
(HQ averaged over K independent scatterer fields) plus speckle formed (a) on the pixel grid, as the fast net's
speckle head forms it (log-envelope of Gaussian-PSF-blurred complex noise, a 3×3 interpolation kernel after the log),
or (b) along the probe's beams (engines.beam_speckle: polar grid, PSF, log, scan conversion) — against HQ, by the
realism report's C2ST. The last row puts (b) on a net's own output (low-passed) instead of the ideal mean grey.

    python research/beam_speckle_ceiling.py -n 24 --repeats 2          # ~6 min on 2 cores

Measured (stop 20, 24 scenes, seeds 50000…, 2 classifiers; C2ST / rank-view C2ST): pixel grid isotropic σ 0.55 px
0.96 / 0.96, anisotropic lateral 0.7 / axial 0.5 px 0.80 / 0.79; along the beams 0.52 / 0.50 (on 48 scenes × 4
classifiers 0.50 ± 0.01); the ideal mean grey alone 1.00 / 0.95; the oracle 0.47 / 0.46. No pixel-grid speckle
passes, however it is trained: the grain's shape depends on depth and beam direction, and on scan conversion
interpolating log-compressed samples.
"""
import argparse

import cv2
import numpy as np
from realism_table import scenes

from usnst.engines.acoustics import EULER_GAMMA, GREY_PER_NEPER_HQ
from usnst.engines.base import EngineOptions
from usnst.engines.beam_speckle import BeamSpeckle, BeamSpeckleConfig
from usnst.engines.body_engine import TorchEagerEngine
from usnst.engines.checkpoint import load_checkpoint, resolve_model
from usnst.offline.realism import C2STBudget, rank_view, realism_report
from usnst_io.media import to_float, to_uint8
from usnst_stream.phantom import render_scene


def mean_grey(seed: int, index: int, size: int, k: int) -> np.ndarray:
    """The scene's HQ averaged over k scatterer fields: its anatomy and mean grey, (almost) no speckle."""
    return np.mean([render_scene(seed + index, index, size, size, speckle_seed=10**6 + 97 * index + j).hq
                    for j in range(k)], axis=0).astype(np.float32)


def pixel_grid(bases, hq, lateral: float, axial: float, seed: int = 0) -> list[np.ndarray]:
    """Speckle formed on the pixel grid, as the removed speckle head formed it (its last version: git show
    e069eea:engines/fast_net.py): two noise planes blurred by a unit-energy Gaussian PSF (7×7), the centred log of
    the envelope, a 3×3 kernel after the log dominated by its centre (the head's start), times the HQ display's
    contrast, on the base."""
    taps = [cv2.getGaussianKernel(7, s, cv2.CV_32F)[:, 0] for s in (lateral, axial)]
    energy = float((np.outer(taps[1], taps[0]) ** 2).sum())
    post = np.full((3, 3), 1.0, np.float32)
    post[1, 1] = np.exp(4.0)
    post /= post.sum()
    rng = np.random.default_rng(seed)
    out = []
    for base, target in zip(bases, hq):
        a, b = (cv2.sepFilter2D(rng.standard_normal(base.shape).astype(np.float32), -1, taps[0], taps[1],
                                borderType=cv2.BORDER_REFLECT) for _ in range(2))
        log_r = 0.5 * np.log((a * a + b * b) * 0.5 / energy + 1e-6) + EULER_GAMMA / 2
        log_r = cv2.filter2D(log_r, -1, post, borderType=cv2.BORDER_REFLECT)
        out.append(to_uint8(np.clip(base + GREY_PER_NEPER_HQ * log_r, 0, 1) * (target > 0)))
    return out


def along_beams(bases, inputs, seed: int = 0) -> list[np.ndarray]:
    stage = BeamSpeckle(BeamSpeckleConfig(base_sigma=0.0))  # the phantom HQ's acquisition
    rng = np.random.default_rng(seed)
    out = []
    for base, frame in zip(bases, inputs):
        planes = [rng.standard_normal(stage.plane_shape[2:]).astype(np.float32) for _ in range(2)]
        out.append(to_uint8(stage.apply(base, to_float(frame), planes)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=24)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=50000)
    ap.add_argument("-k", type=int, default=16, help="scatterer fields averaged for the ideal mean grey")
    ap.add_argument("--repeats", type=int, default=2, help="classifiers per C2ST")
    ap.add_argument("--model", default="lq2hq_fast", help="the net whose output the last row uses (its stage, if any, left out)")
    args = ap.parse_args()
    data = scenes(args.n, args.size, args.seed)
    lq, hq, segs = [d[0] for d in data], [d[1] for d in data], [d[2] for d in data]
    bases = [mean_grey(args.seed, i, args.size, args.k) for i in range(args.n)]
    net, _ = load_checkpoint(resolve_model(args.model))  # the net alone, without the stage its model may record
    run = TorchEagerEngine(net, EngineOptions(seed=0)).infer
    blur = BeamSpeckle(BeamSpeckleConfig(base_sigma=1.5))
    net_bases = [blur.base(run(to_float(x)), to_float(x) > 0) for x in lq]
    rows = {"oracle (HQ, new scatterers)": [d[3] for d in data],
            "ideal mean grey alone": [to_uint8(b) for b in bases],
            "pixel grid, isotropic σ 0.55 px": pixel_grid(bases, hq, 0.55, 0.55),
            "pixel grid, lateral 0.7 / axial 0.5 px": pixel_grid(bases, hq, 0.7, 0.5),
            "along the beams": along_beams(bases, lq),
            f"along the beams, on {args.model} low-passed σ 1.5": along_beams(net_bases, lq)}
    budget = C2STBudget(repeats=args.repeats)
    print(f"{args.n} scenes from seed {args.seed}, {args.size}², ideal mean grey from {args.k} scatterer fields; "
          f"C2ST mean of {args.repeats} classifiers")
    print("| speckle | C2ST | rank-view C2ST | Nakagami m | FWHM ax / lat px | SSIM vs HQ | LP-SSIM |\n|---|---|---|---|---|---|---|")
    for name, images in rows.items():
        r = realism_report(images, hq, segs, budget=budget)
        rank = realism_report(images, hq, segs, budget=budget, view=rank_view)["c2st"]
        o = r["output"]
        print(f"| {name} | {r['c2st']:.2f} | {rank:.2f} | {o['nakagami_m']:.2f} | {o['fwhm_axial_px']:.2f} / "
              f"{o['fwhm_lateral_px']:.2f} | {r['ssim']:.3f} | {r['lowpass_ssim']:.3f} |", flush=True)
    t = realism_report(hq, hq, segs, budget=C2STBudget(repeats=1, steps=1))["target"]
    print(f"| HQ | — | — | {t['nakagami_m']:.2f} | {t['fwhm_axial_px']:.2f} / {t['fwhm_lateral_px']:.2f} | 1 | 1 |")


if __name__ == "__main__":
    main()
