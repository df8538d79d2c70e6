"""Fit the beam-speckle stage (engines.beam_speckle) to target frames: the PSF widths and the display contrast that
make its grain measure like theirs. No network, no pretrained weights: the target's speckle size (autocorrelation
FWHM, axial and lateral) and grain strength are measured in tissue, and the stage's own speckle, formed on each target
frame's fitted fan, is measured the same way for a grid of PSF widths; the closest pair wins, and the contrast
follows from the ratio of grain strengths (the grain is added, so its strength is linear in the contrast).

On the phantom's HQ frames the fit recovers the acquisition they were rendered with (lateral 0.9 ray, axial 0.25 mm =
1.37 samples, 55 dB): see tests/test_beam_speckle.py and docs/lab/lq2hq_fast.md.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from usnst.engines.beam_speckle import (
    BeamSpeckle,
    BeamSpeckleConfig,
    NoFan,
    echo_region,
    fit_fan,
)
from usnst.offline.realism import monotone_fit, speckle, speckle_fwhm, tissue_mask

LATERAL_GRID = tuple(np.round(np.arange(0.4, 2.01, 0.1), 2))  # rays
AXIAL_GRID = tuple(np.round(np.arange(0.6, 3.01, 0.1), 2))  # samples
CURVE_MIN_PIXELS = 50  # a base grey seen on fewer pixels of the fit's frames takes its neighbours' mean


def grain_statistics(images: list[np.ndarray], masks: list[np.ndarray]) -> tuple[float, float, float]:
    """(axial FWHM px, lateral FWHM px, grain std in grey levels): medians over the frames, inside their masks."""
    fwhm = np.array([speckle_fwhm(i, m) for i, m in zip(images, masks)])
    std = [float(speckle(i)[m].std()) for i, m in zip(images, masks)]
    return float(np.nanmedian(fwhm[:, 0])), float(np.nanmedian(fwhm[:, 1])), float(np.median(std))


def grey_curve(bases: list[np.ndarray], targets: list[np.ndarray], regions: list[np.ndarray]) -> tuple[float, ...]:
    """The 256 mean greys (0–1) the targets (uint8) show where the base (float 0–1) has each grey level, inside the
    regions: the nondecreasing curve closest to the per-level means (a brighter base never shows darker); levels
    seen on too few pixels take their neighbours'."""
    level = np.concatenate([np.clip(np.rint(b[r] * 255), 0, 255).astype(np.int64) for b, r in zip(bases, regions)])
    shown = np.concatenate([t[r].astype(np.float64) / 255.0 for t, r in zip(targets, regions)])
    counts = np.bincount(level, minlength=256)
    counts[counts < CURVE_MIN_PIXELS] = 0
    if np.count_nonzero(counts) < 2:
        raise ValueError("too few pixels inside the frames' views to fit a grey curve")
    sums = np.bincount(level, shown * (counts[level] > 0), minlength=256)
    return tuple(float(g) for g in np.clip(monotone_fit(sums, counts), 0.0, 1.0))


def _synthetic(frames: list[np.ndarray], config: BeamSpeckleConfig, seed: int,
               styled: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """The stage's output (contrast as configured) on each frame's own fan, in 0–255: on the model's outputs
    ``styled`` when given (float, one per frame), else on a flat mid-grey base (the grain alone)."""
    stage = BeamSpeckle(config)
    rng = np.random.default_rng(seed)
    out = []
    for k, frame in enumerate(frames):
        planes = [rng.standard_normal(stage.plane_shape[2:]).astype(np.float32) for _ in range(2)]
        base = styled[k] if styled is not None else np.where(frame > 0, 0.5, 0.0).astype(np.float32)
        out.append(stage.apply(base, frame, planes) * 255.0)
    return out


def fit_beam_speckle(targets: list[np.ndarray], segs: list[np.ndarray | None] | None = None,
                     start: BeamSpeckleConfig = BeamSpeckleConfig(), max_frames: int = 12, seed: int = 0,
                     inputs: list[np.ndarray] | None = None, run=None, fit_level: bool = False,
                     fit_curve: bool = False, curve_pairs: list[tuple[np.ndarray, np.ndarray]] | None = None) -> dict:
    """The config whose speckle measures like ``targets`` (uint8 grey frames of a sector probe; ``segs``: their
    label maps, for tissue masks, else masks from brightness). ``start`` gives the polar grid (rays, samples), the
    base σ and the detail share, which the fit keeps.

    ``inputs`` (the targets' paired input frames, uint8) and ``run`` (float input frame → the model's output) fit
    the stage *on the model it will sit on*: the model's base and kept texture widen the grain and add to its
    strength, so the widths and the contrast are chosen for the sum. Without them the grain alone is fitted.
    ``fit_level`` (with ``run``) also sets the stage's level so that the output's mean grey in tissue is the targets'.
    ``fit_curve`` (with ``run``; in place of the level) fits the stage's grey curve instead: the mean grey the targets
    show at each grey level of the model's base, everywhere in the view (fluid and bone too), with ``mean_shown``;
    on ``curve_pairs`` (input, target uint8 frames) when given — frames of every formation the model will meet, whose
    fluid and tissue greys differ — else on the frames the speckle was fitted on.
    Returns {"config", "target": stats, "fitted": stats, "frames": n, "depth_px": the median beam length of the
    frames' views (of ``inputs`` when given: the frames the net takes, for ``BeamSpeckleConfig.net_depth_px``)}."""
    if fit_level and fit_curve:
        raise ValueError("fit the level or the grey curve, not both: the curve takes the level's place")
    segs = segs or [None] * len(targets)
    sources = inputs if inputs is not None else targets
    images, frames, masks, depths = [], [], [], []
    for image, seg, source in zip(targets, segs, sources):
        frame = source.astype(np.float32) / 255.0
        try:
            view = fit_fan(frame)
        except NoFan:
            continue  # not a sector frame: nothing to compare the stage's speckle with
        mask = tissue_mask(image, seg)
        if mask.sum() >= 256:
            images.append(image)
            frames.append(frame)
            masks.append(mask)
            depths.append(view.depth_px)
        if len(frames) == max_frames:
            break
    if not frames:
        raise ValueError("no target frame is a sector-probe frame with enough tissue to measure speckle in")
    styled = [run(f) for f in frames] if run is not None else None
    target = grain_statistics(images, masks)
    measure = lambda cfg: grain_statistics(_synthetic(frames, cfg, seed, styled), masks)
    probe = replace(start, contrast=40.0 / 255.0)  # about a 55 dB display; rescaled below
    lateral, axial = start.lateral_sigma, start.axial_sigma
    # speckle size depends little on the other axis' width: fit lateral, then axial, then lateral again
    for axis in ("lateral", "axial", "lateral"):
        grid = LATERAL_GRID if axis == "lateral" else AXIAL_GRID
        scores = []
        for value in grid:
            cfg = replace(probe, lateral_sigma=value if axis == "lateral" else lateral,
                          axial_sigma=value if axis == "axial" else axial)
            stats = measure(cfg)
            scores.append((abs(math.log(stats[0] / target[0])) + abs(math.log(stats[1] / target[1])), value))
        value = min(scores)[1]
        lateral, axial = (value, axial) if axis == "lateral" else (lateral, value)
    # grain strength: the model's own texture (at zero contrast) and the grain add as variances
    shaped = replace(probe, lateral_sigma=float(lateral), axial_sigma=float(axial))
    floor = measure(replace(shaped, contrast=0.0))[2] if styled is not None else 0.0
    probe_std = measure(shaped)[2]
    grain_var = max(probe_std ** 2 - floor ** 2, 1e-6)
    contrast = probe.contrast * math.sqrt(max(target[2] ** 2 - floor ** 2, 0.0) / grain_var)
    config = replace(shaped, contrast=float(contrast))
    if fit_level and styled is not None:
        tissue_mean = lambda imgs: float(np.mean([i[m].mean() for i, m in zip(imgs, masks)]))
        offset = tissue_mean(images) - tissue_mean(_synthetic(frames, config, seed, styled))
        config = replace(config, level=float(offset / 255.0))
    if fit_curve and styled is not None:
        pairs = ([(f, s, t) for f, s, t in zip(frames, styled, images)] if curve_pairs is None else
                 [(i.astype(np.float32) / 255.0, run(i.astype(np.float32) / 255.0), t) for i, t in curve_pairs])
        stage, regions = BeamSpeckle(config), [echo_region(f) > 0 for f, _, _ in pairs]
        # low-passed within the grown echo region, not the stage's image (stop 44): the ring beyond the view pulls
        # the curve's dark stretch down, which measured better than the curve fitted within the image (lq2hq_fast
        # card, stop 44) — and keeps the shipped curves their recipes' own
        bases = [stage.base(s, r) for (_, s, _), r in zip(pairs, regions)]
        config = replace(config, level=0.0, mean_shown=True,
                         grey_curve=grey_curve(bases, [t for _, _, t in pairs], regions))
    names = ("fwhm_axial_px", "fwhm_lateral_px", "grain_std")
    return {"config": config, "target": dict(zip(names, target)), "fitted": dict(zip(names, measure(config))),
            "frames": len(frames), "depth_px": float(np.median(depths))}
