"""The realism report against real scanner frames (issue 28, item 3): models' outputs on held-out phantoms against
the frames of recordings and scanners no model trained on (`usnst real-scanners`), the C2ST split by recording.

    usnst real-scanners --out data/real --height 256
    python research/real_table.py --real data/real --task hq2clinical --models hq2clinical -n 24

Rows: the simulator's frame itself (identity), each model on it, the ceiling of a model that keeps the input's anatomy
(its low-pass with a real training frame's texture and the real set's grey curve: the phantom's content alone still
gives it away, docs/lab/real_scanners.md), and the real training set (its recordings against the held-out ones: the
floor a model trained on that set could reach, since the held-out scanners are other makers').
Columns: C2ST against held-out real tissue patches (mean ± standard error over classifiers), Nakagami m and speckle
FWHM (and their ratio to the held-out set's), low-passed SSIM to the input (anatomy kept), the invented structure
(share of the frame differing from the input by more than any grey map explains). Each recording gives at most
``--per-recording`` frames, evenly spread, so one long cine does not stand for the whole held-out set.
``--probe KIND``: the phantom's frames from that probe kind, against (and with a floor and ceiling from) only the real
recordings of the same kind (each recording's probe as `usnst real-scanners` lists it).
"""
import argparse
import json
from pathlib import Path

import cv2
import numpy as np
from realism_table import SOURCE_INDEX, c2st_cell, scenes

from usnst.engines.base import EngineOptions
from usnst.engines.registry import load_engine
from usnst.offline.real_scanners import RECORDINGS
from usnst.offline.real_scanners import recording_frames as recordings
from usnst.offline.realism import (
    TEXTURE_SIGMA,
    C2STBudget,
    realism_report,
    speckle,
    texture_view,
    tissue_mask,
)
from usnst.offline.scanner_texture import grey_map
from usnst.offline.tasks import task
from usnst_io.media import to_float, to_uint8
from usnst_stream.phantom import PROBES


def _cover(donor: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``donor`` scaled to cover ``shape`` and cropped to it, centred."""
    h, w = shape
    scale = max(h / donor.shape[0], w / donor.shape[1])
    donor = cv2.resize(donor, (max(w, round(donor.shape[1] * scale)), max(h, round(donor.shape[0] * scale))))
    y0, x0 = (donor.shape[0] - h) // 2, (donor.shape[1] - w) // 2
    return donor[y0:y0 + h, x0:x0 + w]


def transplant(images: list[np.ndarray], donors: list[np.ndarray]) -> list[np.ndarray]:
    """Each image's low-pass (σ ``TEXTURE_SIGMA``: its anatomy) plus a real frame's texture (its ``speckle``),
    inside the image's lit sector: the output a style transfer that kept the anatomy and drew a real scanner's
    texture would give, the ceiling of any such model under a patch classifier. Where the donor frame has no tissue
    (fluid, outside its sector) it has no texture to give: ``donor_tissue`` says where it has."""
    out = []
    for k, image in enumerate(images):
        donor = _cover(donors[k % len(donors)].astype(np.float32), image.shape)
        base = cv2.GaussianBlur(image.astype(np.float32), (0, 0), TEXTURE_SIGMA)
        residual = speckle(donor)
        out.append(np.where(image > 0, np.clip(base + residual + 0.5, 0, 255), 0).astype(np.uint8))
    return out


def donor_tissue(images: list[np.ndarray], donors: list[np.ndarray]) -> list[np.ndarray]:
    """Where each transplanted image's donor frame has tissue (its texture is a real one there)."""
    return [tissue_mask(_cover(donors[k % len(donors)], image.shape)) for k, image in enumerate(images)]


def of_probe(side: tuple, kind: str | None) -> tuple:
    """(frames, groups, names) of one side kept to the recordings whose probe (``RECORDINGS``) is ``kind``."""
    if kind is None:
        return side
    probes = {r.id: r.probe for r in RECORDINGS}
    frames, groups, names = side
    keep = [k for k, name in enumerate(names) if probes.get(name) == kind]
    if len(keep) < 2:
        raise SystemExit(f"--probe {kind}: {len(keep)} recording(s) of that probe on this side; the C2ST splits by "
                         "recording and needs two")
    index = {k: j for j, k in enumerate(keep)}
    picked = [(f, index[g]) for f, g in zip(frames, groups) if g in index]
    return [f for f, _ in picked], [g for _, g in picked], [names[k] for k in keep]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", required=True, help="a set written by `usnst real-scanners` (train/, held_out/)")
    ap.add_argument("--models", default="hq2clinical", help="comma-separated embedded names or checkpoints")
    ap.add_argument("--task", default="hq2clinical", help="which phantom panel is the input (lq2hq: LQ, hq2clinical: HQ)")
    ap.add_argument("-n", type=int, default=24, help="held-out phantom scenes")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=50000, help="first scene seed (never used in training)")
    ap.add_argument("--per-recording", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=C2STBudget.repeats)
    ap.add_argument("--noise", default="frame", help="engine noise mode")
    ap.add_argument("--no-baselines", action="store_true",
                    help="leave out the identity and real-training-set rows (they do not change with the model)")
    ap.add_argument("--texture-view-too", action="store_true",
                    help="also the C2ST under the texture view (each patch less its local mean): the phantom's content "
                    "tells every patch apart from a scanner's whatever the style, this asks about the texture")
    ap.add_argument("--probe", choices=PROBES, default=None,
                    help="phantom frames of this probe kind, against the real recordings of the same kind only")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    real = Path(args.real)
    held, held_groups, held_names = of_probe(recordings(real / "held_out", args.per_recording), args.probe)
    train, train_groups, train_names = of_probe(recordings(real / "train", args.per_recording), args.probe)
    data = scenes(args.n, args.size, args.seed, probe_kind=args.probe)
    src = SOURCE_INDEX[task(args.task).source]
    inputs, segs = [d[src] for d in data], [d[2] for d in data]
    budget = C2STBudget(repeats=args.repeats)

    def report(name, outputs, **kw):
        r = realism_report(outputs, held, budget=budget, target_groups=held_groups, paired=False, **kw)
        if args.texture_view_too:  # the same patches under the texture view: style apart from the phantom's content
            t = realism_report(outputs, held, budget=budget, target_groups=held_groups, view=texture_view,
                               paired=False, **kw)
            r.update(c2st_texture=t["c2st"], c2st_texture_se=t.get("c2st_se", float("nan")))
        return {"model": name, **r}

    rows = [] if args.no_baselines else [report(f"identity (the phantom's {task(args.task).source.upper()})", inputs,
                                                segs=segs, references=inputs, inputs=inputs)]
    for name in args.models.split(","):
        engine = load_engine(name, "torch", EngineOptions(noise=args.noise, seed=0))
        outputs = [to_uint8(engine.infer(to_float(x))) for x in inputs]
        rows.append(report(name, outputs, segs=segs, references=inputs, inputs=inputs))
    if not args.no_baselines:
        lut = grey_map(inputs, train)
        ceiling_segs = [np.where(m, s, 0).astype(np.uint8) for m, s in zip(donor_tissue(inputs, train), segs)]
        rows.append(report("ceiling: the input's anatomy + a real training frame's texture, grey-mapped",
                           transplant([lut[x] for x in inputs], train), segs=ceiling_segs, references=inputs,
                           inputs=inputs))
        rows.append(report(f"real training set ({len(train_names)} recordings)", train, output_groups=train_groups))

    target = rows[0]["target"]
    print(f"held-out real: {len(held)} frames of {len(held_names)} recordings ({', '.join(held_names)}); "
          f"Nakagami m {target['nakagami_m']:.2f}, speckle FWHM {target['fwhm_axial_px']:.2f} / "
          f"{target['fwhm_lateral_px']:.2f} px. Outputs: {len(data)} held-out phantoms {args.size}² (seeds "
          f"{args.seed}…), noise {args.noise}. C2ST: {budget.repeats} classifiers × {budget.steps} steps, split by "
          f"image (phantoms) and recording (real).")
    texture = " | C2ST, texture view" if args.texture_view_too else ""
    print(f"| rows | C2ST vs held-out real{texture} | Nakagami m | FWHM ax / lat px (× held-out) | LP-SSIM to input | "
          f"invented |\n|---|---|{'---|' if texture else ''}---|---|---|---|")
    for r in rows:
        o = r["output"]
        ratio = f"{o['fwhm_axial_px'] / target['fwhm_axial_px']:.2f} / {o['fwhm_lateral_px'] / target['fwhm_lateral_px']:.2f}"
        lp = f"{r['lowpass_ssim']:.3f}" if "lowpass_ssim" in r else "—"
        inv = f"{100 * r['invented_share']:.1f} %" if "invented_share" in r else "—"
        tv = f" | {r['c2st_texture']:.2f} ± {r['c2st_texture_se']:.2f}" if texture else ""
        print(f"| {r['model']} | {c2st_cell(r)}{tv} | {o['nakagami_m']:.2f} | {o['fwhm_axial_px']:.2f} / "
              f"{o['fwhm_lateral_px']:.2f} ({ratio}) | {lp} | {inv} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=float))


if __name__ == "__main__":
    main()
