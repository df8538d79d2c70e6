"""Which property of a model's output tells it apart from real scanner frames (issue 28)? The C2ST against a real
set (`usnst real-scanners`; split by recording) for the output transformed by a chain of operations, each of which
fixes one property: the grey map matched to the real training set's tissue (a monotone map: the scanner's
post-processing curve), a Gaussian blur (axial × lateral σ: a scanner's speckle reduction and line interpolation), a
multiplicative echotexture (a smooth random field: tissue that is not uniform at the scale of a few pixels), JPEG
compression (recorded frames' block artefacts); a real frame's texture transplanted onto the output's low-pass
(``transplant``: the ceiling of a model that keeps the anatomy and draws a real texture); and two views of the
classifier's patches: rank (grey levels gone, only the spatial shape left) and texture (the patch less its local mean).
``real`` as the model puts the real training frames themselves in the outputs' place (the floor).

Choices are read against the real *training* set (`--against train`, the default), so the held-out scanners stay
unseen for the figures a model is reported with.

    python research/real_cues.py --real data/real --model runs/v0/model.pt -n 24 \\
        --rows "as is;rank;grey;blur1.2x3+grey;blur1.2x3+tex2x6x0.3+grey;jpeg30+grey"
"""
import argparse
from pathlib import Path

import cv2
import numpy as np
from real_table import donor_tissue, grey_map, recordings, transplant
from realism_table import SOURCE_INDEX, c2st_cell, scenes

from usnst.engines.base import EngineOptions
from usnst.engines.registry import load_engine
from usnst.offline.realism import (
    C2STBudget,
    rank_view,
    realism_report,
    texture_view,
)
from usnst.offline.tasks import task
from usnst_io.media import to_float, to_uint8


def blur(image: np.ndarray, axial: float, lateral: float) -> np.ndarray:
    out = cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigmaX=lateral, sigmaY=axial)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def echotexture(image: np.ndarray, axial: float, lateral: float, strength: float, seed: int) -> np.ndarray:
    """``image`` times exp(strength · a unit-variance Gaussian field of σ axial × lateral px)."""
    field = cv2.GaussianBlur(np.random.default_rng(seed).standard_normal(image.shape).astype(np.float32), (0, 0),
                             sigmaX=lateral, sigmaY=axial)
    field /= field.std() + 1e-6
    return np.clip(image * np.exp(strength * field) + 0.5, 0, 255).astype(np.uint8)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)


def transformed(outputs: list[np.ndarray], chain: str, lut: np.ndarray, donors: list[np.ndarray] = ()):
    """(images, view) for a row spec: operations joined by '+', applied in order; 'rank' sets the view."""
    images, view = list(outputs), None
    for op in (o.strip() for o in chain.split("+")):
        if op in ("as is", ""):
            continue
        if op == "rank":
            view = rank_view
        elif op == "texture":
            view = texture_view
        elif op == "transplant":
            images = transplant(images, donors)
        elif op == "grey":
            images = [lut[i] for i in images]
        elif op.startswith("blur"):
            ax, lat = (float(v) for v in op[4:].split("x"))
            images = [blur(i, ax, lat) for i in images]
        elif op.startswith("tex"):
            ax, lat, strength = (float(v) for v in op[3:].split("x"))
            images = [echotexture(i, ax, lat, strength, k) for k, i in enumerate(images)]
        elif op.startswith("jpeg"):
            images = [jpeg(i, int(op[4:])) for i in images]
        else:
            raise SystemExit(f"unknown operation {op!r}")
    return images, view


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", required=True)
    ap.add_argument("--model", default=None, help="a checkpoint or embedded name; none: the phantom's frame itself")
    ap.add_argument("--task", default="hq2clinical")
    ap.add_argument("--against", choices=("train", "held_out"), default="train")
    ap.add_argument("-n", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rows", default="as is;rank;grey", help="row specs separated by ';' (see the docstring)")
    args = ap.parse_args()

    real = Path(args.real)
    against, groups, names = recordings(real / args.against, 24)
    train, train_groups, _ = recordings(real / "train", 24)
    data = scenes(args.n, 256, 50000)
    inputs, segs = [d[SOURCE_INDEX[task(args.task).source]] for d in data], [d[2] for d in data]
    if args.model == "real":
        outputs, inputs, segs = list(train), list(train), [None] * len(train)
    elif args.model:
        engine = load_engine(args.model, "torch", EngineOptions(noise="frame", seed=0))
        outputs = [to_uint8(engine.infer(to_float(x))) for x in inputs]
    else:
        outputs = inputs
    budget = C2STBudget(repeats=args.repeats)
    print(f"{args.model or 'identity'} on {args.n} phantoms against real {args.against} ({len(against)} frames of "
          f"{len(names)} recordings); C2ST {budget.repeats} × {budget.steps} steps, split by image and recording")
    print("| outputs | C2ST | Nakagami m | FWHM ax / lat px | LP-SSIM |\n|---|---|---|---|---|")
    for spec in args.rows.split(";"):
        ops = [o.strip() for o in spec.split("+")]
        before = "+".join(ops[:ops.index("grey")]) if "grey" in ops else None  # the map fitted where it applies
        lut = grey_map(transformed(outputs, before, None, train)[0], train) if before is not None else None
        images, view = transformed(outputs, spec, lut, train)
        row_segs = segs
        if "transplant" in ops:  # patches only where the donor gave a real texture (label 0 is no tissue)
            row_segs = [np.where(m, s, 0).astype(np.uint8) for m, s in zip(donor_tissue(outputs, train), segs)]
        r = realism_report(images, against, segs=row_segs, budget=budget, target_groups=groups, references=inputs,
                           view=view, output_groups=train_groups if args.model == "real" else None, paired=False)
        o = r["output"]
        print(f"| {spec} | {c2st_cell(r)} | {o['nakagami_m']:.2f} | {o['fwhm_axial_px']:.2f} / "
              f"{o['fwhm_lateral_px']:.2f} | {r['lowpass_ssim']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
