"""SSIM/PSNR of every Gatys variant against the HQ target on fixed synthetic phantom pairs, next to the identity
baseline (LQ vs HQ). Same seed and iterations for every variant.

    python research/nst_variant_table.py --pairs 2 --size 64 --iterations 100 --vgg-weights random
"""
import argparse
import tempfile
from pathlib import Path

from usnst.offline.datasets import read_triptych_folder, resize_longest
from usnst.offline.masks import foreground_mask, label_masks
from usnst.offline.metrics import mean_scores, score_pair
from usnst.offline.nst import (
    augmented_target,
    average_style_target,
    clear_background,
    run_local_nst,
    run_nst,
    style_target,
)
from usnst.offline.nst_config import NSTConfig
from usnst.offline.vgg import load_vgg19
from usnst_io.media import to_uint8 as to8
from usnst_stream.phantom import write_phantoms

parser = argparse.ArgumentParser()
parser.add_argument("--pairs", type=int, default=4)
parser.add_argument("--size", type=int, default=128)
parser.add_argument("--iterations", type=int, default=300)
parser.add_argument("--vgg-weights", default=None)
parser.add_argument("--seed", type=int, default=2000)
parser.add_argument("--lr", type=float, default=5e-3, help="Adam step in grey levels (thesis: 5e-3)")
args = parser.parse_args()

folder = Path(tempfile.mkdtemp(prefix="usnst-variants-"))
write_phantoms(folder, args.pairs, 1000, 1386, seed=args.seed)
samples = read_triptych_folder(folder)
vgg = load_vgg19(args.vgg_weights)
cfg = NSTConfig(task="lq2hq", iterations=args.iterations, lr=args.lr)
small = [(resize_longest(s.lq, args.size), resize_longest(s.hq, args.size), resize_longest(s.seg, args.size, True))
         for s in samples]
scores = {}


def score(name, out, hq):
    scores.setdefault(name, []).append(score_pair(out, hq))


for i, (lq, hq, seg) in enumerate(small):
    other_hq = [h for j, (_, h, _) in enumerate(small) if j != i] or [hq]
    score("identity (LQ)", lq, hq)
    plain = run_nst(vgg, lq, style_target(vgg, hq), cfg).image
    score("plain", to8(plain), hq)
    score("plain + clear background", to8(clear_background(plain, foreground_mask(seg))), hq)
    target, masks = augmented_target(vgg, hq, seg, seg)
    score("augmented (paired seg)", to8(run_nst(vgg, lq, target, cfg, masks).image), hq)
    target, masks = augmented_target(vgg, hq, seg, None)
    score("augmented (content masks)", to8(run_nst(vgg, lq, target, cfg, masks).image), hq)
    score("local", to8(run_local_nst(vgg, lq, hq, label_masks(seg), cfg).image), hq)
    score("average style (Gram)", to8(run_nst(vgg, lq, average_style_target(vgg, other_hq, mode="gram"), cfg).image), hq)
    score("average style (features)",
          to8(run_nst(vgg, lq, average_style_target(vgg, other_hq, mode="features"), cfg).image), hq)

print(f"{args.pairs} phantom pairs (seed {args.seed}), {args.size} px, {args.iterations} iterations, "
      f"lr {cfg.lr} grey levels, weights {cfg.weights()}, VGG19 {vgg.weights_source}")
print("| variant | SSIM vs HQ | PSNR vs HQ (dB) |\n|---|---|---|")
for name, rows in scores.items():
    m = mean_scores(rows)
    print(f"| {name} | {m['ssim']:.4f} | {m['psnr']:.2f} |", flush=True)
