"""How sharp an anatomy can any squared-error net draw from one LQ frame? (issue 27 item 6, the whole-sector C2ST)

docs/lab/whole_sector.md found the whole-sector classifier reading the anatomy's softness: the shipped nets' skull ring
and boundaries are wider than HQ's, under any stage or filter. This asks whether the input carries the sharpness. The
phantom can re-render a scene with new scatterers, so each image splits into its anatomy (the mean over ``--fields``
renders) and its speckle (one render less that mean). Per band of spatial frequency, the power of:

- LQ's anatomy: 0.7–0.9 of HQ's, about as much at the fine scales as at the coarse (LQ resolves the anatomy;
  its grey scale is lower);
- LQ's speckle in one frame: as strong as that anatomy at the scales that make an edge sharp, so in one frame
  they cannot be told apart pixel by pixel;
- the best *linear* estimate of the anatomy from one LQ frame (the Wiener filter, band by band: A² / (A + N));
- each net's output without noise (its estimate, one frame at a time), and its mean over the renders.

If the nets' fine-scale power sits at or above the linear bound, they already draw what one LQ frame supports; the
rest of HQ's sharpness would have to be drawn without evidence — a generative net's choice, which the
invented-structure bar exists to catch. Domain: phantom (the mean exists because the phantom re-renders).

    python research/anatomy_bound.py --models lq2hq_fast,lq2hq -n 8 --fields 12     # validation seeds 70000…
"""
import argparse

import numpy as np
import torch

from usnst.engines.checkpoint import load_checkpoint, resolve_model
from usnst_stream.phantom import render_scene

BANDS = ((0.01, 0.03), (0.03, 0.06), (0.06, 0.10), (0.10, 0.15), (0.15, 0.25))  # cycles per pixel, radial
SPECKLE_SEEDS = 5_555_555  # scene s, render j: s * 64 + j + this (unrelated to the sets' own scatterers)


def band_power(image: np.ndarray) -> np.ndarray:
    """Mean power of the (mean-removed) image's spectrum in each radial band."""
    power = np.abs(np.fft.fftshift(np.fft.fft2(image - image.mean()))) ** 2
    h, w = image.shape
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot((yy - h // 2) / h, (xx - w // 2) / w)
    return np.array([power[(r >= a) & (r < b)].mean() for a, b in BANDS])


def net_output(net, lq: np.ndarray) -> np.ndarray:
    """The net's estimate: its output with the noise planes at zero (no injected texture)."""
    x = torch.from_numpy(lq.astype(np.float32))[None, None]
    with torch.no_grad():
        zeros = [torch.zeros(s) for s in net.noise_shapes(1, *lq.shape)]
        return net(x, zeros).clamp(0, 1)[0, 0].numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="lq2hq_fast,lq2hq")
    ap.add_argument("--seed", type=int, default=70000, help="first scene (validation: 70000…; never test seeds)")
    ap.add_argument("-n", type=int, default=8, help="scenes")
    ap.add_argument("--fields", type=int, default=12, help="renders per scene with new scatterers")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--settings", default="varied")
    args = ap.parse_args()
    torch.set_num_threads(1)
    nets = {m: load_checkpoint(resolve_model(m))[0] for m in args.models.split(",")}
    rows: dict[str, list[np.ndarray]] = {}
    for s in range(args.seed, args.seed + args.n):
        hq, lq, out = [], [], {m: [] for m in nets}
        for j in range(args.fields):
            sample = render_scene(s, s - args.seed, args.size, args.size, settings=args.settings,
                                  speckle_seed=s * 64 + j + SPECKLE_SEEDS)
            hq.append(sample.hq)
            lq.append(sample.lq)
            for m, net in nets.items():
                out[m].append(net_output(net, sample.lq))
        k = args.fields
        anatomy = band_power(np.mean(hq, 0))
        one, mean = band_power(lq[0]), band_power(np.mean(lq, 0))
        lq_speckle = (one - mean) * k / (k - 1)  # the mean keeps 1/k of one render's speckle power
        lq_anatomy = mean - lq_speckle / k
        found = {"HQ, one render": band_power(hq[0]), "LQ anatomy (mean over renders)": lq_anatomy,
                 "LQ speckle, one frame": lq_speckle, "linear bound from one LQ frame": lq_anatomy ** 2 / one}
        for m in nets:
            found[f"{m}, one frame"] = band_power(out[m][0])
            found[f"{m}, mean over renders"] = band_power(np.mean(out[m], 0))
        for name, power in found.items():
            rows.setdefault(name, []).append(power / anatomy)
    print(f"power in each band as a share of HQ's anatomy (the mean over {args.fields} renders); {args.n} scenes from "
          f"seed {args.seed}, {args.size}², geometric mean over scenes")
    print("| | " + " | ".join(f"{a}–{b} c/px" for a, b in BANDS) + " |\n" + "|---" * (len(BANDS) + 1) + "|")
    for name, values in rows.items():
        share = np.exp(np.mean(np.log(np.maximum(values, 1e-9)), axis=0))
        print(f"| {name} | " + " | ".join(f"{x:.2f}" for x in share) + " |")


if __name__ == "__main__":
    main()
