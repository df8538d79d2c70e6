"""One NST run from files to files: read inputs, pick the variant, optimise, write image + loss curves + report.

Inputs come either as separate images (content, style, optional segmentations) or as one thesis triptych
(LQ | HQ | seg), from which the task decides the content (LQ, or the segmentation for seg2hq) and the style (HQ).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from usnst.offline import loss_curves
from usnst.offline.datasets import resize_longest, split_triptych
from usnst.offline.masks import foreground_mask, label_masks
from usnst.offline.metrics import score_pair
from usnst.offline.nst import (
    augmented_target,
    average_style_target,
    clear_background,
    run_local_nst,
    run_nst,
    run_texture_nst,
    style_target,
)
from usnst.offline.nst_config import LOSS_NETWORKS, VARIANTS, NSTJob
from usnst.offline.vgg import load_vgg19
from usnst_io.media import read_gray, read_stills, to_uint8, write_png


def _inputs(job: NSTJob):
    if job.triptych:
        t = split_triptych(read_gray(job.triptych), job.triptych)
        content = t.seg if job.nst.task == "seg2hq" else t.lq
        return content, t.hq, t.seg, None if job.style_dir else t.seg, t.hq
    if not job.content or not (job.style or job.style_dir):
        raise ValueError("give --triptych, or --content with --style (or --style-dir)")
    read_opt = lambda p: read_gray(p) if p else None
    return read_gray(job.content), read_opt(job.style), read_opt(job.content_seg), read_opt(job.style_seg), None


def _random_filter_nst(job: NSTJob, content, style):
    """The plain or average-style variant with the random-filter texture loss (no pretrained weights)."""
    if job.variant != "plain":
        raise ValueError("the random-filter loss network runs the plain variant (with --style or --style-dir); "
                         "the augmented and local variants need --loss-network vgg")
    styles = read_stills(job.style_dir) if job.style_dir else [style]
    if job.size and job.style_dir:
        styles = [resize_longest(s, job.size) for s in styles]
    cfg = job.nst
    return run_texture_nst(content, styles, cfg, cfg.content_weight or 1.0, cfg.style_weight or 1.0)


def _vgg_nst(job: NSTJob, vgg, content, style, content_seg, style_seg):
    """The thesis' VGG19 variants; returns (result, the label masks of an augmented run or None)."""
    cfg = job.nst
    if job.style_dir:
        styles = read_stills(job.style_dir)
        if job.size:
            styles = [resize_longest(s, job.size) for s in styles]
        return run_nst(vgg, content, average_style_target(vgg, styles, cfg.style_layers, job.average), cfg), None
    if job.variant == "plain":
        return run_nst(vgg, content, style_target(vgg, style, cfg.style_layers), cfg), None
    if content_seg is None:
        raise ValueError(f"the {job.variant} variant needs the content's segmentation (--content-seg or --triptych)")
    if job.variant == "augmented":
        target, masks = augmented_target(vgg, style, content_seg, style_seg, cfg.style_layers)
        return run_nst(vgg, content, target, cfg, masks), masks
    return run_local_nst(vgg, content, style, label_masks(content_seg), cfg), None


def run_job(job: NSTJob) -> dict:
    if job.variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {job.variant!r}")
    content, style, content_seg, style_seg, reference = _inputs(job)
    if job.size:
        content = resize_longest(content, job.size)
        style = resize_longest(style, job.size) if style is not None else None
        content_seg = resize_longest(content_seg, job.size, labels=True) if content_seg is not None else None
        style_seg = resize_longest(style_seg, job.size, labels=True) if style_seg is not None else None
        reference = resize_longest(reference, job.size) if reference is not None else None
    cfg = job.nst
    t0 = time.monotonic()
    if cfg.loss_network == "random-filters":
        result, masks, weights_source = _random_filter_nst(job, content, style), None, None
    elif cfg.loss_network == "vgg":
        vgg = load_vgg19(job.vgg_weights, seed=cfg.seed).to(job.device)
        result, masks = _vgg_nst(job, vgg, content, style, content_seg, style_seg)
        weights_source = vgg.weights_source
    else:
        raise ValueError(f"loss network must be one of {LOSS_NETWORKS}, got {cfg.loss_network!r}")
    image = result.image
    if job.clear_background:
        if content_seg is None:
            raise ValueError("--clear-background needs the content's segmentation")
        image = clear_background(image, foreground_mask(content_seg))
    out = Path(job.out)
    out8 = to_uint8(image)
    write_png(out, out8)
    loss_curves.write_csv(result.losses, out.with_suffix(".losses.csv"))
    loss_curves.plot(result.losses, out.with_suffix(".losses.png"))
    report = {"output": str(out), "variant": "average-" + job.average if job.style_dir else job.variant,
              "loss_network": cfg.loss_network, "vgg_weights": weights_source, "seconds": time.monotonic() - t0,
              "final_loss": result.losses[-1] if result.losses else None, "labels": sorted(masks) if masks else None,
              "config": {k: v for k, v in asdict(job).items() if k != "nst"}, "nst": asdict(cfg)}
    if reference is not None:
        report["metrics_vs_hq"] = score_pair(out8, reference, content)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str))
    return report
