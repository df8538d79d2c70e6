"""A realism report that needs no ImageNet network: does the output's speckle look like the target domain's, and did
the anatomy survive?

- **Speckle size**: full width at half maximum of the normalised autocorrelation of the speckle (the image minus
  its local mean) inside tissue, axial (down the frame) and lateral (across), in pixels.
- **Nakagami m** of the envelope in 16×16 tissue blocks (offline.metrics.nakagami), median over blocks.
- **Tissue histogram distance**: 1-D Wasserstein distance between the grey levels of tissue pixels, in grey levels.
- **Anatomy kept**: SSIM between low-passed images (a Gaussian wide enough to erase speckle), so a model may make
  new speckle but not new structure.
- **Invented structure**: output and input low-passed, the output's grey levels mapped to the input's by the best
  monotone curve (a model may change brightness and contrast, not what is where); the share of the sector that still
  differs by more than 20 grey levels, and the width of the largest such blob.
- **C2ST** (classifier two-sample test, Lopez-Paz & Oquab 2017): a small CNN is trained for a fixed budget and seed
  to tell output patches from target-domain patches; its held-out accuracy is 0.5 when they are indistinguishable.

"In tissue" means inside one label of the segmentation, eroded so no block or patch straddles a boundary (fluid,
skull and outside-sector pixels are not tissue speckle); without a label map, the lit imaging region.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace

import cv2
import numpy as np
from scipy.optimize import isotonic_regression
from tqdm import tqdm

from usnst.engines.acoustics import (
    ANECHOIC_LABELS,
    MEASURED_DYNAMIC_RANGE_DB,
    SPECKLE_LABELS,
)
from usnst.offline.metrics import nakagami, ssim

LOWPASS_SIGMA = 3.0  # px: erases speckle (FWHM ≈ 1.5–2 px on HQ) but keeps organ boundaries
PATCH = 32
TEXTURE_SIGMA = 4.0  # px: the local mean that ``speckle`` and ``texture_view`` remove (the anatomy's slow variation)


def tissue_mask(image: np.ndarray, seg: np.ndarray | None = None, margin: int = 4) -> np.ndarray:
    """Bool mask of tissue pixels at least ``margin`` px from any other label (or from the dark background)."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    if seg is None:
        lit = (cv2.GaussianBlur(image.astype(np.float32), (0, 0), 4.0) > 10).astype(np.uint8)
        return cv2.erode(lit, kernel).astype(bool)
    return label_interiors(seg, SPECKLE_LABELS, kernel)


def label_interiors(seg: np.ndarray, labels: tuple[int, ...], kernel: np.ndarray) -> np.ndarray:
    """Bool mask of the pixels of ``labels`` whose neighbourhood ``kernel`` holds no other label."""
    mask = np.zeros(seg.shape, bool)
    for label in labels:
        region = (seg == label).astype(np.uint8)
        if region.any():
            mask |= cv2.erode(region, kernel).astype(bool)
    return mask


def anechoic_grey(images: list[np.ndarray], segs: list[np.ndarray], margin: int = 4) -> float:
    """Mean grey of the images inside their anechoic labels (fluid, vessels; ``margin`` px in from other labels),
    NaN where none has any: a scanner shows them dark with a sparse grain, and grain added over them evenly and
    clipped, or a net's mean lifted there, brightens them (a cue a whole-sector classifier reads)."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    masks = [label_interiors(s, ANECHOIC_LABELS, kernel) for s in segs]
    total = sum(int(m.sum()) for m in masks)
    return float(sum(float(i[m].sum()) for i, m in zip(images, masks)) / total) if total else float("nan")


def speckle(image: np.ndarray, sigma: float = TEXTURE_SIGMA) -> np.ndarray:
    """The image minus its local (Gaussian σ px) mean: the speckle, without the anatomy's slow variation."""
    img = image.astype(np.float64)
    return img - cv2.GaussianBlur(img, (0, 0), sigma)


def _fwhm(profile: np.ndarray) -> float:
    """Full width at half maximum of a symmetric profile given at lags 0, 1, 2 … (linear interpolation)."""
    below = np.flatnonzero(profile < 0.5)
    if below.size == 0:
        return float("nan")
    k = int(below[0])
    a, b = profile[k - 1], profile[k]
    return 2.0 * (k - 1 + (a - 0.5) / (a - b))


def speckle_fwhm(image: np.ndarray, mask: np.ndarray, max_lag: int = 16) -> tuple[float, float]:
    """(axial, lateral) FWHM in pixels of the speckle's autocorrelation inside ``mask``: masked autocovariance by FFT,
    each lag divided by the number of pixel pairs it has, normalised to 1 at lag 0."""
    if mask.sum() < 64:
        return float("nan"), float("nan")
    s = speckle(image)
    m = mask.astype(np.float64)
    x = (s - s[mask].mean()) * m
    shape = [int(2 ** np.ceil(np.log2(n + max_lag + 1))) for n in x.shape]
    fx, fm = np.fft.rfft2(x, shape), np.fft.rfft2(m, shape)
    ac = np.fft.irfft2(fx * np.conj(fx), shape)
    pairs = np.fft.irfft2(fm * np.conj(fm), shape)
    norm = ac / np.maximum(pairs, 1.0)
    norm = norm / norm[0, 0]
    return _fwhm(norm[:max_lag + 1, 0]), _fwhm(norm[0, :max_lag + 1])


def tissue_nakagami(image: np.ndarray, mask: np.ndarray, dynamic_range_db: float = MEASURED_DYNAMIC_RANGE_DB) -> float:
    """Median Nakagami m over 16×16 blocks lying wholly in ``mask``."""
    return nakagami(image, dynamic_range_db, mask=mask)["m"]


def histogram_distance(a: np.ndarray, mask_a: np.ndarray, b: np.ndarray, mask_b: np.ndarray) -> float:
    """1-D Wasserstein distance (grey levels) between the tissue intensities of two images or sets."""
    from scipy.stats import wasserstein_distance

    va, vb = a[mask_a].astype(np.float64), b[mask_b].astype(np.float64)
    if va.size == 0 or vb.size == 0:
        return float("nan")
    return float(wasserstein_distance(va, vb))


def lowpass_ssim(a: np.ndarray, b: np.ndarray, sigma: float = LOWPASS_SIGMA) -> float:
    """SSIM of the two images after a Gaussian low-pass: anatomy compared, speckle ignored."""
    blur = lambda x: cv2.GaussianBlur(x.astype(np.float32) / 255.0, (0, 0), sigma)
    return ssim(blur(a), blur(b), data_range=1.0)


INVENTED_GREY = 20.0  # grey levels that a low-passed output may differ from its input after the monotone map


def invented_structure(output: np.ndarray, source: np.ndarray, sigma: float = LOWPASS_SIGMA,
                       threshold: float = INVENTED_GREY) -> dict:
    """Structure in ``output`` that its input ``source`` (uint8 grey, same size) does not have: ``share`` of the
    input's sector (its lit pixels' hull, less a σ-wide rim) whose low-passed grey differs from the input's by more
    than ``threshold`` after the best monotone grey map, and ``largest_blob_px``, the widest such region's width (twice
    its largest inscribed radius)."""
    if output.shape != source.shape:
        raise ValueError(f"output {output.shape} and input {source.shape} differ in size")
    blur = lambda x: cv2.GaussianBlur(x.astype(np.float32), (0, 0), sigma)
    out, src = blur(output), blur(source)
    points = cv2.findNonZero((source > 10).astype(np.uint8))
    if points is None:
        return {"share": 0.0, "largest_blob_px": 0.0, "pixels": 0}
    sector = np.zeros(source.shape, np.uint8)
    cv2.fillConvexPoly(sector, cv2.convexHull(points), 1)
    rim = 2 * math.ceil(2 * sigma) + 1
    sector = cv2.erode(sector, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (rim, rim))).astype(bool)
    if not sector.any():
        return {"share": 0.0, "largest_blob_px": 0.0, "pixels": 0}
    levels = np.clip(out[sector], 0, 255).astype(np.int64)
    counts = np.bincount(levels, minlength=256).astype(np.float64)
    sums = np.bincount(levels, weights=src[sector].astype(np.float64), minlength=256)
    curve = monotone_fit(sums, counts)
    differs = np.zeros(source.shape, np.uint8)
    differs[sector] = np.abs(curve[levels] - src[sector]) > threshold
    inscribed = cv2.distanceTransform(differs, cv2.DIST_L2, 5)
    return {"share": float(differs[sector].mean()), "largest_blob_px": float(2 * inscribed.max()),
            "pixels": int(sector.sum())}


def monotone_fit(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The non-decreasing curve over 256 grey levels closest (weighted least squares) to the per-level means
    ``sums / counts`` (isotonic regression), levels without pixels interpolated and the ends held."""
    seen = np.flatnonzero(counts)
    fitted = isotonic_regression(sums[seen] / counts[seen], weights=counts[seen].astype(np.float64)).x
    return np.interp(np.arange(256), seen, fitted)


def tissue_patches(image: np.ndarray, mask: np.ndarray, n: int, rng: np.random.Generator,
                   size: int = PATCH) -> list[np.ndarray]:
    """Up to ``n`` size×size patches whose every pixel lies in ``mask`` (random positions, seeded)."""
    h, w = mask.shape
    if h < size or w < size:
        return []
    inside = cv2.erode(mask.astype(np.uint8), np.ones((size, size), np.uint8), anchor=(0, 0))[: h - size + 1, : w - size + 1]
    ys, xs = np.nonzero(inside)
    if ys.size == 0:
        return []
    pick = rng.choice(ys.size, size=min(n, ys.size), replace=False)
    return [image[ys[k]:ys[k] + size, xs[k]:xs[k] + size] for k in pick]


def _patches(images, masks, n: int, rng: np.random.Generator) -> tuple[list[np.ndarray], list[int]]:
    """Tissue patches of every image and, for each, the index of its image (the C2ST's split groups)."""
    patches, groups = [], []
    for i, (image, mask) in enumerate(zip(images, masks)):
        cut = tissue_patches(image, mask, n, rng)
        patches += cut
        groups += [i] * len(cut)
    return patches, groups


@dataclass(frozen=True)
class C2STBudget:
    """The classifier's fixed budget: reported with every C2ST figure so runs are comparable. ``repeats`` classifiers
    (seeds ``seed``, ``seed`` + 1 …, each holding out other images) are averaged: with 24 images one split holds out
    7, and single splits of one model read 0.84 and 0.98.

    2,000 steps, because a short budget under-trains the classifier and flatters every model: at 300 steps the
    real-time net read 0.59–0.69, at 1,200 0.82–0.87, at 2,400 0.84–0.98, while HQ against the oracle (HQ of the
    same scenes with new scatterers) stayed at 0.43–0.53 all along (split by image; 24 phantoms, 256²)."""

    steps: int = 2000
    batch: int = 64
    lr: float = 2e-3
    held_out: float = 0.3
    seed: int = 0
    repeats: int = 3

    def __post_init__(self):
        if self.repeats < 1 or self.steps < 1:
            raise ValueError(f"a C2ST needs at least one classifier and one training step, got repeats={self.repeats}, "
                             f"steps={self.steps}")


def held_out_groups(ga: np.ndarray, gb: np.ndarray, share: float, rng: np.random.Generator) -> set:
    """The group labels a C2ST tests on. Paired sets share labels (a scene's output and target): a ``share`` of them,
    both sides together. Unpaired sets: a share of each side's own, so a side of six recordings still has one or
    two to test on (a draw over both sides could leave none)."""
    def pick(labels):
        return rng.permutation(labels)[:max(1, int(round(len(labels) * share)))].tolist()

    la, lb = np.unique(ga), np.unique(gb)
    if np.intersect1d(la, lb).size:
        return set(pick(np.union1d(la, lb)))
    return set(pick(la)) | set(pick(lb))


# A classifier that answers one class for every training patch has learnt nothing, and its held-out 0.5 is not
# evidence: on 512² phantoms one in two started dead and stayed at loss ln 2 for all 2,000 steps (held-out exactly
# 0.500) while others read 0.61–0.71. Such a classifier is trained again from another start (seed + 1000 k), up to
# FIT_ATTEMPTS in all, and the first that answers both classes is scored (not the best: choosing among classifiers
# would bias the figure). The first start is the one every earlier figure used, so a figure changes only where its
# classifier had learnt nothing.
DEAD_SHARE, FIT_ATTEMPTS, FIT_SEED_STEP = 0.02, 3, 1000  # dead: under 2 % of training patches given the other class


def c2st(patches_a: list[np.ndarray], patches_b: list[np.ndarray], budget: C2STBudget = C2STBudget(),
         groups_a: list[int] | None = None, groups_b: list[int] | None = None,
         tick: Callable[[int], object] | None = None) -> float:
    """Held-out accuracy of a small CNN trained to tell ``patches_a`` from ``patches_b`` (uint8, equal sizes).
    0.5: indistinguishable; 1.0: always told apart. Classes are balanced to the smaller set, in training and test.

    ``groups_a``/``groups_b``: the image each patch was cut from. Given, whole images are held out (a ``held_out``
    share of the group labels, the same labels on both sides: pass a scene's index for its output and for its
    target). Patches of one image overlap and share its speckle, so a classifier trained long enough learns them by
    heart: split by patch, HQ against the same scenes rendered with new scatterers read 0.65–0.74 at 2,400 steps,
    where two samples of one distribution must read 0.5. ``tick(n)`` is called as training steps pass (a progress
    bar: the classifiers are what takes minutes). A classifier that answers one class for every training patch is
    trained again from another start (DEAD_SHARE)."""
    import torch
    from torch import nn

    rng = np.random.default_rng(budget.seed)
    ga = np.arange(len(patches_a)) if groups_a is None else np.asarray(groups_a)
    gb = len(patches_a) + np.arange(len(patches_b)) if groups_b is None else np.asarray(groups_b)
    held = held_out_groups(ga, gb, budget.held_out, rng)
    test_a, test_b = [np.flatnonzero(np.isin(g, list(held))) for g in (ga, gb)]
    train_a, train_b = [np.flatnonzero(~np.isin(g, list(held))) for g in (ga, gb)]

    def balanced(ia, ib):
        n = min(len(ia), len(ib))
        return rng.permutation(ia)[:n], rng.permutation(ib)[:n]

    (train_a, train_b), (test_a, test_b) = balanced(train_a, train_b), balanced(test_a, test_b)
    if len(train_a) < 5 or len(test_a) < 5:
        return float("nan")
    stack = lambda patches, idx: np.stack([patches[i] for i in idx]).astype(np.float32)[:, None] / 255.0

    def tensors(ia, ib):
        x = torch.from_numpy(np.concatenate([stack(patches_a, ia), stack(patches_b, ib)]))
        return x, torch.cat([torch.zeros(len(ia)), torch.ones(len(ib))])

    x, y = tensors(train_a, train_b)
    x_test, y_test = tensors(test_a, test_b)
    for attempt in range(FIT_ATTEMPTS):
        seed = budget.seed + FIT_SEED_STEP * attempt
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1),
                            nn.ReLU(), nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                            nn.Flatten(), nn.Linear(64, 1))
        opt = torch.optim.Adam(net.parameters(), lr=budget.lr)
        gen = torch.Generator().manual_seed(seed)
        for step in range(budget.steps):
            if tick is not None and step % 50 == 49:
                tick(50)
            idx = torch.randint(len(x), (budget.batch,), generator=gen)
            loss = nn.functional.binary_cross_entropy_with_logits(net(x[idx])[:, 0], y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            one_class = (net(x)[:, 0] > 0).float().mean().item()
            score = float(((net(x_test)[:, 0] > 0).float() == y_test).float().mean())
        if min(one_class, 1 - one_class) > DEAD_SHARE:  # it answers both classes: it learnt, whatever it scores
            break
    return score


def rank_view(patch: np.ndarray) -> np.ndarray:
    """The patch's grey levels replaced by their ranks (0…255): brightness, contrast and histogram gone, only the
    grain's spatial shape left: does a model's grain have the target's shape, whatever its grey levels (figures of
    models under it: docs/lab/)."""
    order = np.argsort(np.argsort(patch.ravel(), kind="stable"), kind="stable")
    return (order.reshape(patch.shape) * (255.0 / max(patch.size - 1, 1))).astype(np.float32)


def texture_view(patch: np.ndarray) -> np.ndarray:
    """``speckle`` of the patch (less its local mean, Gaussian σ ``TEXTURE_SIGMA``), offset to mid-grey: the texture without the
    anatomy's shape and brightness. Against real scanner frames the phantom's content (uniform labelled regions,
    geometric edges) tells every patch apart whatever its style (docs/lab/real_scanners.md); under this view a
    model's texture is compared with a scanner's."""
    return (speckle(patch) + 128.0).astype(np.float32)


def phase_randomised_view(patch: np.ndarray) -> np.ndarray:
    """The patch with its power spectrum kept and its Fourier phases drawn anew (seeded by the patch's own bytes, so
    the same patch always gives the same view): only second-order texture, the spectrum or autocorrelation, is left
    for a classifier to use, so a C2ST under it asks whether the spectrum alone tells the sets apart (HQ against the
    oracle: about 0.5)."""
    p = patch.astype(np.float64)
    amplitude = np.abs(np.fft.fft2(p - p.mean()))
    rng = np.random.default_rng(zlib.crc32(np.ascontiguousarray(patch).tobytes()))
    phase = np.angle(np.fft.fft2(rng.standard_normal(p.shape)))  # a real field's phases: the result is real
    return (np.fft.ifft2(amplitude * np.exp(1j * phase)).real + p.mean()).astype(np.float32)


def realism_report(outputs: list[np.ndarray], targets: list[np.ndarray], segs: list[np.ndarray | None] | None = None,
                   references: list[np.ndarray] | None = None, target_segs: list[np.ndarray | None] | None = None, patches_per_image: int = 40,
                   budget: C2STBudget = C2STBudget(), dynamic_range_db: float = MEASURED_DYNAMIC_RANGE_DB,
                   view: Callable[[np.ndarray], np.ndarray] | None = None, progress: bool = False,
                   inputs: list[np.ndarray] | None = None, target_groups: list[int] | None = None,
                   output_groups: list[int] | None = None, paired: bool | None = None) -> dict:
    """The realism measures of a set of outputs against a set of target-domain images (uint8 grey).

    ``segs``: label maps of the outputs' scenes (tissue masks; also the paired targets' unless ``target_segs`` gives
    the targets' own). ``references``: what
    anatomy must match after a low-pass — the paired targets, or the inputs for unpaired tasks (default: targets
    when they pair with the outputs one to one). ``view``: a transform of each C2ST patch, both sides alike (e.g.
    ``rank_view``), to ask which of the patches' properties the classifier uses. ``inputs``: the frames the
    outputs were made from (one each): the report then has the invented structure (``invented_share``, the mean
    share of the sector; ``invented_blob_px``, the widest blob of any frame). ``target_groups``: the recording each
    unpaired target comes from; the C2ST then holds out whole recordings, since frames of one cine are near-copies
    and a split by frame would test memory of a recording; ``output_groups`` the same for outputs that are
    themselves recorded frames (the real training set against the held-out one). ``paired``: whether target k is
    output k's (default: when the counts are equal — an unpaired set that happens to be as large must say False).
    Paired with label maps, the report also has ``anechoic_grey``: the outputs' and the targets' mean grey in fluid
    and vessels."""
    segs = segs or [None] * len(outputs)
    rng = np.random.default_rng(budget.seed)
    out_masks = [tissue_mask(o, s) for o, s in zip(outputs, segs)]
    paired = len(targets) == len(outputs) if paired is None else paired
    if paired and len(targets) != len(outputs):
        raise ValueError(f"paired targets pair with the outputs one to one: {len(targets)} targets, {len(outputs)} outputs")
    target_segs = target_segs or (segs if paired else [None] * len(targets))
    tgt_masks = [tissue_mask(t, s) for t, s in zip(targets, target_segs)]

    def median(values) -> float:
        values = np.asarray(values, np.float64)
        values = values[np.isfinite(values)]
        return float(np.median(values)) if values.size else float("nan")

    def set_stats(images, masks):
        fwhm = np.array([speckle_fwhm(i, m) for i, m in zip(images, masks)])
        m = [tissue_nakagami(i, k, dynamic_range_db) for i, k in zip(images, masks)]
        return {"nakagami_m": median(m), "fwhm_axial_px": median(fwhm[:, 0]), "fwhm_lateral_px": median(fwhm[:, 1])}

    report = {"output": set_stats(outputs, out_masks), "target": set_stats(targets, tgt_masks),
              "images": len(outputs), "targets": len(targets)}
    report["histogram_w1"] = histogram_distance(np.concatenate([o.ravel() for o in outputs]),
                                                np.concatenate([m.ravel() for m in out_masks]),
                                                np.concatenate([t.ravel() for t in targets]),
                                                np.concatenate([m.ravel() for m in tgt_masks]))
    if paired and all(s is not None for s in segs):
        report["anechoic_grey"] = {"output": anechoic_grey(outputs, segs), "target": anechoic_grey(targets, segs)}
    references = references if references is not None else (targets if paired else None)
    if references is not None:
        report["lowpass_ssim"] = float(np.mean([lowpass_ssim(o, r) for o, r in zip(outputs, references)]))
        report["ssim"] = float(np.mean([ssim(o, r) for o, r in zip(outputs, references)]))
    if inputs is not None:
        if len(inputs) != len(outputs):
            raise ValueError(f"{len(inputs)} inputs for {len(outputs)} outputs: give the frame each was made from")
        found = [invented_structure(o, i) for o, i in zip(outputs, inputs)]
        report["invented_share"] = float(np.mean([f["share"] for f in found]))
        report["invented_blob_px"] = float(max(f["largest_blob_px"] for f in found))
    pa, ga = _patches(outputs, out_masks, patches_per_image, rng)
    pb, gb = _patches(targets, tgt_masks, patches_per_image, rng)
    # paired: a scene's output and target are held out together; unpaired: the two sets' images are separate groups
    if (target_groups is not None or output_groups is not None) and paired:
        raise ValueError("recording groups are for unpaired sets: paired targets are held out with their outputs")
    ga = ga if output_groups is None else [output_groups[g] for g in ga]
    offset = 1 + max(ga, default=0)  # the two sets' groups never share a label
    gb = gb if paired else [offset + (g if target_groups is None else target_groups[g]) for g in gb]
    if view is not None:
        pa, pb = [view(p) for p in pa], [view(p) for p in pb]
    with tqdm(total=budget.repeats * budget.steps, desc="realism: C2ST classifiers", unit="step",
              disable=None if progress else True) as bar:
        runs = [c2st(pa, pb, replace(budget, seed=budget.seed + k), ga, gb, tick=bar.update)
                for k in range(budget.repeats)]
    report["c2st"] = float(np.mean(runs))
    report["c2st_runs"] = runs
    # how far the mean would move with other splits: classifiers of one model spread 0.64-0.94 (48 scenes)
    report["c2st_se"] = float(np.std(runs, ddof=1) / np.sqrt(len(runs))) if len(runs) > 1 else float("nan")
    report["c2st_patches"] = min(len(pa), len(pb))
    report["c2st_budget"] = {"steps": budget.steps, "batch": budget.batch, "seed": budget.seed,
                             "repeats": budget.repeats, "patch": PATCH, "held_out": budget.held_out,
                             "split": "by image" + "".join(f"; {side} by recording" for side, groups in
                                                           (("outputs", output_groups), ("targets", target_groups))
                                                           if groups is not None)}
    return report
