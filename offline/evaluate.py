"""`usnst metrics`: score a folder of outputs against paired targets — SSIM, PSNR, FID (per image over 299×299
patches, averaged as the thesis does, and over the whole set), KID over the whole set, and the Nakagami speckle
statistic of outputs and targets. No single one of them decides realism: SSIM/PSNR reward closeness to one
target, FID/KID compare feature distributions (with ImageNet weights), Nakagami m compares speckle statistics."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from usnst.engines.acoustics import MEASURED_DYNAMIC_RANGE_DB
from usnst.offline.datasets import split_triptych
from usnst.offline.metrics import (
    fid,
    inception_features,
    kid,
    mean_scores,
    nakagami,
    patches,
    score_pair,
)
from usnst_io.media import list_inputs, read_gray

TARGET_LAYOUTS = ("plain", "triptych")


@dataclass
class MetricsJob:
    outputs: str
    targets: str
    targets_layout: str = "plain"  # or "triptych": the target is the HQ panel of the same-named triptych
    with_fid: bool = False
    inception_weights: str | None = None
    patch: int = 299
    with_nakagami: bool = False
    dynamic_range_db: float = MEASURED_DYNAMIC_RANGE_DB
    with_realism: bool = False  # the realism report (offline.realism): C2ST, speckle size, tissue m, low-passed SSIM
    c2st_repeats: int = 3  # C2ST classifiers averaged (each holds out other images); more: a tighter figure, slower
    inputs: str | None = None  # folder of the frames the outputs were made from (same names): invented structure
    progress: bool = True  # a progress bar (FID over many patches takes minutes on a CPU)


def _target(job: MetricsJob, rel: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The target image and, for triptych targets, the scene's label map (tissue masks for the realism report)."""
    path = Path(job.targets) / rel
    img = read_gray(path)
    if job.targets_layout == "triptych":
        t = split_triptych(img, str(path))
        return t.hq, t.seg
    return img, None


def evaluate(job: MetricsJob) -> dict:
    base, paths = list_inputs(job.outputs)
    model = None
    if job.with_fid:
        from usnst.offline.inception import load_inception

        model = load_inception(job.inception_weights)
    rows, failures, all_a, all_b, kept = [], [], [], [], []
    for path in tqdm(paths, desc="metrics", unit="img", disable=None if job.progress else True):
        rel = path.relative_to(base)
        try:
            out, (target, seg) = read_gray(path), _target(job, rel)
            row = {"image": str(rel), **score_pair(out, target)}
        except (OSError, ValueError) as exc:
            failures.append({"output": str(rel), "error": str(exc)})
            continue
        if job.with_nakagami:
            row["nakagami_m"] = nakagami(out, job.dynamic_range_db)["m"]
            row["target_nakagami_m"] = nakagami(target, job.dynamic_range_db)["m"]
        if model is not None:
            fa = inception_features(model, patches(out, job.patch))
            fb = inception_features(model, patches(target, job.patch))
            row["fid"] = fid(fa, fb) if len(fa) > 1 else float("nan")
            all_a.append(fa)
            all_b.append(fb)
        if job.with_realism:
            try:
                source = read_gray(Path(job.inputs) / rel) if job.inputs else None
            except (OSError, ValueError) as exc:
                failures.append({"output": str(rel), "error": f"its input: {exc}"})
                continue
            kept.append((out, target, seg, source))
        rows.append(row)
    summary = {"images": len(rows), "failures": failures, **mean_scores(rows, prefix="mean_")}
    if kept:
        from usnst.offline.realism import C2STBudget, realism_report

        summary["realism"] = realism_report([k[0] for k in kept], [k[1] for k in kept], [k[2] for k in kept],
                                            budget=C2STBudget(repeats=job.c2st_repeats),
                                            dynamic_range_db=job.dynamic_range_db, progress=job.progress,
                                            inputs=[k[3] for k in kept] if job.inputs else None)
    if all_a and sum(len(a) for a in all_a) > 1:
        summary["set_fid"] = fid(np.concatenate(all_a), np.concatenate(all_b))
        summary["set_kid"], summary["set_kid_std"] = kid(np.concatenate(all_a), np.concatenate(all_b))
        summary["inception_weights"] = model.weights_source
        if model.weights_source.startswith("random"):
            summary["fid_meaningless"] = ("Inception weights are random: FID/KID computed for testing only, not "
                                          "comparable to anything; give --inception-weights (ImageNet InceptionV3)")
    return {"rows": rows, "summary": summary}


def format_table(result: dict) -> str:
    rows, s = result["rows"], result["summary"]
    has_fid = any("fid" in r for r in rows) and "fid_meaningless" not in s  # never print a number that means nothing
    has_nak = any("nakagami_m" in r for r in rows)
    lines = [f"{'image':40} {'SSIM':>7} {'PSNR':>7}" + (f" {'FID':>9}" if has_fid else "")
             + (f" {'Nakagami m':>10} {'target m':>9}" if has_nak else "")]
    for r in rows:
        lines.append(f"{r['image'][:40]:40} {r['ssim']:7.4f} {r['psnr']:7.2f}" + (f" {r['fid']:9.2f}" if has_fid else "")
                     + (f" {r['nakagami_m']:10.3f} {r['target_nakagami_m']:9.3f}" if has_nak else ""))
    nan = float("nan")
    lines.append(f"{'mean':40} {s.get('mean_ssim', nan):7.4f} {s.get('mean_psnr', nan):7.2f}"
                 + (f" {s.get('mean_fid', nan):9.2f}" if has_fid else "")
                 + (f" {s.get('mean_nakagami_m', nan):10.3f} {s.get('mean_target_nakagami_m', nan):9.3f}" if has_nak else ""))
    if "realism" in s:
        r, o, t = s["realism"], s["realism"]["output"], s["realism"]["target"]
        lines.append(f"realism: Nakagami m {o['nakagami_m']:.3f} (target {t['nakagami_m']:.3f}), speckle FWHM axial/lateral "
                     f"{o['fwhm_axial_px']:.2f}/{o['fwhm_lateral_px']:.2f} px (target {t['fwhm_axial_px']:.2f}/"
                     f"{t['fwhm_lateral_px']:.2f}), C2ST {r['c2st']:.3f}{_spread(r)} (0.5: indistinguishable; "
                     f"{r['c2st_patches']} patches a side), tissue histogram W1 {r['histogram_w1']:.1f} grey levels, "
                     f"low-passed SSIM "
                     f"{r.get('lowpass_ssim', float('nan')):.3f}"
                     + (f", invented structure {r['invented_share']:.2%} of the sector (widest blob "
                        f"{r['invented_blob_px']:.1f} px)" if "invented_share" in r else "")
                     + (f", grey in fluid and vessels {r['anechoic_grey']['output']:.1f} (target "
                        f"{r['anechoic_grey']['target']:.1f})"
                        if np.isfinite(r.get("anechoic_grey", {}).get("output", float("nan"))) else ""))
    if "fid_meaningless" in s:
        lines.append(f"FID/KID not shown: {s['fid_meaningless']}")
    elif "set_fid" in s:
        lines.append(f"whole-set FID {s['set_fid']:.2f}, KID {s['set_kid']:.4f} ± {s['set_kid_std']:.4f} "
                     f"(Inception weights: {s['inception_weights']})")
    for f in s["failures"]:
        lines.append(f"not scored: {f['output']}: {f['error']}")
    return "\n".join(lines)


def _spread(realism: dict) -> str:
    """' ± standard error over k classifiers' beside a C2ST: what a difference between two figures is worth."""
    se, k = realism.get("c2st_se", float("nan")), len(realism.get("c2st_runs", []))
    return f" ± {se:.3f} over {k} classifiers" if np.isfinite(se) else ""


def write_outputs(result: dict, csv_path: str | None, json_path: str | None) -> None:
    if csv_path and result["rows"]:
        with open(csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(result["rows"][0]))
            w.writeheader()
            w.writerows(result["rows"])
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2))
