"""Can a net trained on the anatomy's mean pass the whole-sector C2ST (issue 27 item 6)?

docs/lab/whole_sector.md found the net's mean too soft: every edge-keeping filter of `lq2hq_fast`'s output under the
stage read 0.89–0.92, the ideal mean + the stage's grain 0.80. But the shipped net is regressed on HQ that shares
LQ's scatterers, so its output carries LQ's speckle too and the stage blurs it (σ 1.5 px) before adding grain — the
blur the same table shows costs the ideal mean 0.80 → 0.96. A net regressed on each scene's HQ averaged over k
scatterer fields has no texture to blur: this writes such training folders (the same scenes and LQ panels as an
existing phantom folder, the HQ panel replaced by its mean over k fields), for `usnst train` and `usnst speckle
--base-sigma 0`.

    python research/mean_target.py --source data/realism_train --out data/mean_train --k 8

Domain: phantom (the mean exists only because the phantom can re-render a scene).
"""
import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from usnst_io.media import to_uint8, write_png
from usnst_stream.phantom import render_scene

SPECKLE_SEEDS = 3_333_333  # scene s, field j: s * 16 + j + this (unrelated to the LQ's and to --independent-hq's)


def mean_hq(seed: int, index: int, size: int, recipe: dict, k: int) -> np.ndarray:
    look = {"settings": recipe["settings"], "formation": recipe.get("formation", "gaussian"),
            "anatomy": recipe.get("anatomy", "fetal"), "probe_kind": recipe.get("probe")}
    return np.mean([render_scene(seed, index, size, size, speckle_seed=seed * 16 + j + SPECKLE_SEEDS, **look).hq
                    for j in range(k)], axis=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", required=True, help="a folder `usnst phantom` wrote (its phantoms.json names the look)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--k", type=int, default=8, help="scatterer fields averaged per scene")
    args = ap.parse_args()
    source, out = Path(args.source), Path(args.out)
    recipe = json.loads((source / "phantoms.json").read_text())
    if recipe.get("independent_hq"):
        raise SystemExit(f"{source}: its HQ panels have their own scatterers; use a folder of plain phantoms")
    out.mkdir(parents=True, exist_ok=True)
    (out / "phantoms.json").write_text(json.dumps({**recipe, "mean_hq_fields": args.k, "source": str(source)}, indent=2))
    paths = sorted(source.glob("phantom_*.png"))
    first = int(paths[0].stem.split("_")[1])
    for path in paths:
        target = out / path.name
        if target.exists():
            continue  # resumed
        seed = int(path.stem.split("_")[1])
        panels = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        height, width = panels.shape[0], panels.shape[1] // 3
        if height != width:
            raise SystemExit(f"{path}: panels of {height}×{width}; this writes square phantoms only")
        panels[:, width:2 * width] = to_uint8(mean_hq(seed, seed - first, height, recipe, args.k))
        write_png(target, panels)
    print(f"{len(paths)} triptychs with HQ averaged over {args.k} fields in {out}")


if __name__ == "__main__":
    main()
