"""What gives a model's output away: the C2ST on filtered versions of the outputs and targets, and the tissue-patch
statistics a classifier can use, next to HQ's and the oracle's (HQ of the same scenes with new scatterers).

A C2ST that stays high on high-passed images but drops on low-passed ones says the fine speckle is the cue, and
the other way round; a drop after matching the mean grey level says brightness is part of it. Two patch views ask
the same of the texture itself: rank-normalised patches keep only the grain's spatial shape (no histogram),
phase-randomised ones only its power spectrum (no phase structure) — stop 19 measured the shipped real-time net at
0.95 and 0.64 under them (HQ against the oracle about 0.5; 48 scenes), so the grain's shape gives it away even
where its spectrum alone would not.

The statistics table (patch mean and std, skewness and kurtosis of the mean-removed grey levels, autocorrelation at
small lags, axial × lateral, share of dark pixels, skewness of the fine texture (HQ's pits are sharp, its grains
broad), the share of pixels brighter than all 8 neighbours, and how often the brightest 3 % touch each other: HQ's
bright grains are blobs, a net's often lone spikes) names the candidates to put in a loss; the
phase-grid table shows a decoder's periodic pattern (pixel shuffle: the fine texture's mean and RMS differ by pixel
phase mod 4); the spectrum table gives each output's texture power against HQ's by spatial frequency, axial and
lateral (a decoder's grid is a peak at 0.25 cycles/px; grain too fine is power near Nyquist, 0.5) and the spectrum
loss the trainer's ``--spectrum-weight`` would see.

    python research/realism_cues.py --models lq2hq_fast,lq2hq -n 24
    python research/realism_cues.py --models runs/x/model.pt --no-c2st      # statistics only: seconds, not minutes
"""
import argparse

import cv2
import numpy as np
import torch
from realism_table import scenes
from scipy.stats import kurtosis, skew
from torch.nn import functional as F

from usnst.engines.base import EngineOptions
from usnst.engines.registry import load_engine
from usnst.offline.losses import gaussian_lowpass
from usnst.offline.realism import (
    phase_randomised_view,
    rank_view,
    realism_report,
    tissue_mask,
    tissue_patches,
)
from usnst_io.media import to_float, to_uint8

LAGS = ((1, 0), (0, 1), (1, 1), (1, -1), (2, 0), (0, 2), (3, 0), (0, 3))
BANDS = {"0.03–0.12": (0.03, 0.125), "0.16–0.22": (0.15, 0.22), "0.25 (grid)": (0.24, 0.26), "0.28–0.41": (0.27, 0.42),
         "0.44–0.5": (0.43, 0.51)}  # cycles per pixel


# Measurements of the texture that once were training terms (removed from the package: they shipped in no model;
# git show e069eea:offline/losses.py). Here they measure, they do not train.
def phase_statistics(x: torch.Tensor, tissue: torch.Tensor, period: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and RMS of the high-passed image (x minus its σ 2 px blur) inside ``tissue``, per pixel phase
    (y mod period, x mod period): (period², ) each. Flat for real speckle; a decoder that unfolds channels into
    pixels (pixel shuffle, strided upsampling) leaves a periodic grid there."""
    hp = x - gaussian_lowpass(x, 2.0)
    keep = tissue.to(x.dtype)
    unfold = lambda t: F.pixel_unshuffle(t, period).transpose(0, 1).flatten(1)  # (period², N·H/p·W/p)
    hp, keep = unfold(hp), unfold(keep)
    count = keep.sum(1).clamp_min(1.0)
    mean = (hp * keep).sum(1) / count
    rms = ((hp * hp * keep).sum(1) / count + 1e-8).sqrt()
    return mean, rms


def speckle_spectrum(x: torch.Tensor, tissue: torch.Tensor, window: int = 16, stride: int = 4,
                     keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean power spectrum of the texture in window×window tiles (every ``stride`` px) lying wholly in ``tissue``:
    each tile's mean removed, a Hann window applied, |FFT|² averaged over the kept tiles of the whole batch —
    (window, window // 2 + 1), axial frequency first. Also returns the kept-tile mask, to take the same tiles of a
    paired target."""
    tiles = F.unfold(x, window, stride=stride)  # (N, window², tiles)
    if keep is None:
        keep = F.unfold(tissue.to(x.dtype), window, stride=stride).amin(dim=1) > 0.5  # (N, tiles)
    t = tiles.transpose(1, 2)[keep]  # (kept, window²)
    if t.shape[0] == 0:
        return x.new_zeros(window, window // 2 + 1), keep
    hann = torch.hann_window(window, periodic=False, dtype=x.dtype, device=x.device)
    t = (t - t.mean(dim=1, keepdim=True)).view(-1, window, window) * (hann[:, None] * hann[None, :])
    return torch.fft.rfft2(t).abs().square().mean(dim=0), keep


def spectrum_loss(output: torch.Tensor, target: torch.Tensor, tissue: torch.Tensor, window: int = 16,
                  stride: int = 4) -> torch.Tensor:
    """Mean |log| ratio of the output's and the target's texture power spectra (``speckle_spectrum``, the same tiles
    of both): every spatial frequency counts alike, whatever its power. Frequency-domain distortions of generated
    images are what a small classifier finds first (Durall et al., "Watch your up-convolution", CVPR 2020). Here, on
    the realism-trained real-time net against HQ in tissue (32×32 patches): a peak at 0.25 cycles/px in both
    directions (its ×4 pixel-shuffle decoder; 1.4× HQ's power), too much lateral power near Nyquist and 16 % too
    little overall, all while its speckle FWHM, Nakagami m and local histograms matched HQ's. Zero only when the two
    spectra agree; blind to each tile's brightness."""
    p_out, keep = speckle_spectrum(output, tissue, window, stride)
    if not keep.any():
        return output.sum() * 0
    p_tgt, _ = speckle_spectrum(target, tissue, window, stride, keep)
    eps = 1e-3 * p_tgt.mean().detach() + 1e-12
    return ((p_out + eps).log() - (p_tgt + eps).log()).abs().mean()


def filtered(images: list[np.ndarray], kind: str, gain: float = 1.0) -> list[np.ndarray]:
    f = [i.astype(np.float32) for i in images]
    if kind == "low-passed σ 1.5":
        f = [cv2.GaussianBlur(i, (0, 0), 1.5) for i in f]
    elif kind == "low-passed σ 3":
        f = [cv2.GaussianBlur(i, (0, 0), 3.0) for i in f]
    elif kind == "high-passed σ 2":
        f = [i - cv2.GaussianBlur(i, (0, 0), 2.0) + 128 for i in f]
    elif kind == "mean grey matched":
        f = [i * gain for i in f]
    return [np.clip(i, 0, 255).astype(np.uint8) for i in f]


def patch_statistics(p: np.ndarray) -> list[float]:
    p = p.astype(np.float64)
    q = p - p.mean()
    v = max(q.var(), 1e-12)
    h, w = q.shape

    def ac(dy, dx):
        a = q[max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)]
        b = q[max(0, -dy):h + min(0, -dy), max(0, -dx):w + min(0, -dx)]
        return (a * b).mean() / v
    fine = p - cv2.GaussianBlur(p, (0, 0), 4.0)  # the grain, as offline.losses.grain_histogram_loss sees it
    centre = p[1:-1, 1:-1]
    neighbours = [p[1 + dy:h - 1 + dy, 1 + dx:w - 1 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    peaks = np.all([centre > n for n in neighbours], axis=0).mean()  # pixels brighter than all 8 neighbours
    bright = p > np.quantile(p, 0.97)  # a bright grain is a PSF-sized blob in HQ, a lone spike in a net's speckle
    paired = np.zeros_like(bright)
    paired[1:] |= bright[:-1]
    paired[:-1] |= bright[1:]
    paired[:, 1:] |= bright[:, :-1]
    paired[:, :-1] |= bright[:, 1:]
    return [p.mean(), np.sqrt(v), skew(q.ravel()), kurtosis(q.ravel())] + [ac(*lag) for lag in LAGS] + [
        (p < 0.5 * p.mean()).mean(), skew(fine.ravel()), peaks, paired[bright].mean() if bright.any() else np.nan]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="lq2hq_fast", help="comma-separated embedded names or checkpoints")
    ap.add_argument("-n", type=int, default=24)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=50000)
    ap.add_argument("--settings", default="default", choices=["default", "varied", "outside"],
                    help="acquisition settings of the scenes (`--seed 1000 --settings varied`: the training set's held-out frames)")
    ap.add_argument("--no-c2st", action="store_true", help="skip the filtered C2ST table (the slow part)")
    args = ap.parse_args()
    data = scenes(args.n, args.size, args.seed, args.settings)
    hq, segs = [d[1] for d in data], [d[2] for d in data]
    sets = {"oracle": [d[3] for d in data], "identity (LQ)": [d[0] for d in data]}
    for name in args.models.split(","):
        engine = load_engine(name, "torch", EngineOptions(seed=0))
        sets[name] = [to_uint8(engine.infer(to_float(d[0]))) for d in data]
    masks = [tissue_mask(h, s) for h, s in zip(hq, segs)]
    mean_of = lambda images: np.mean([i[m].mean() for i, m in zip(images, masks)])

    print("C2ST (as the realism report: split by image, 2,000 steps, mean of 3)")
    views = {"rank-normalised patches": rank_view, "phase-randomised patches": phase_randomised_view}
    kinds = ["as is", "low-passed σ 1.5", "low-passed σ 3", "high-passed σ 2", "mean grey matched", *views]
    print("| output | " + " | ".join(kinds) + " |\n" + "|---" * (len(kinds) + 1) + "|")
    for name, images in ({} if args.no_c2st else sets).items():
        cells = []
        for kind in kinds:
            gain = mean_of(hq) / mean_of(images)
            if kind in views:
                r = realism_report(images, hq, segs, view=views[kind])
            else:
                r = realism_report(filtered(images, kind, gain), filtered(hq, kind), segs)
            cells.append(f"{r['c2st']:.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)

    names = (["mean", "std", "skew", "kurtosis"] + [f"r({dy},{dx})" for dy, dx in LAGS]
             + ["dark < mean/2", "fine-texture skew (σ 4)", "local maxima share",
                "brightest 3 % with a bright 4-neighbour"])
    stats = {}
    for name, images in {"HQ": hq, **sets}.items():
        rng = np.random.default_rng(0)
        patches = [p for i, m in zip(images, masks) for p in tissue_patches(i, m, 40, rng)]
        stats[name] = np.mean([patch_statistics(p) for p in patches], axis=0)
    print("\nTissue patches (32², mean over patches; r(axial, lateral) lags)")
    print("| statistic | " + " | ".join(stats) + " |\n" + "|---" * (len(stats) + 1) + "|")
    for i, stat in enumerate(names):
        print(f"| {stat} | " + " | ".join(f"{stats[k][i]:.3f}" for k in stats) + " |")

    print("\nPhase grid: high-passed texture in tissue per pixel phase (y, x mod 4), as offline.losses.phase_loss sees it")
    print("| output | mean over phases (grey levels) | RMS spread over phases |\n|---|---|---|")
    for name, images in {"HQ": hq, **sets}.items():
        h, w = (s - s % 4 for s in images[0].shape)
        x = torch.from_numpy(np.stack([i[:h, :w] for i in images]).astype(np.float32))[:, None]
        t = torch.from_numpy(np.stack([m[:h, :w] for m in masks]))[:, None]
        mean, rms = phase_statistics(x, t)
        print(f"| {name} | {mean.min():+.2f} … {mean.max():+.2f} | {(rms.max() - rms.min()) / rms.mean() * 100:.1f} % |")
    spectra(hq, masks, sets)


def spectra(hq: list[np.ndarray], masks: list[np.ndarray], sets: dict) -> None:
    """Texture power by frequency band against HQ's, in the 32×32 tissue tiles a C2ST patch covers."""
    as_t = lambda images: torch.from_numpy(np.stack(images).astype(np.float32) / 255.0)[:, None]
    tissue = torch.from_numpy(np.stack(masks))[:, None].float()
    ref, keep = speckle_spectrum(as_t(hq), tissue, window=32, stride=8)
    fy = np.abs(np.fft.fftfreq(32))[:, None] * np.ones((1, 17))  # axial frequency of each bin
    fx = np.fft.rfftfreq(32)[None, :] * np.ones((32, 1))  # lateral
    print("\nTexture power against HQ's, by frequency (cycles/px), in 32×32 tissue tiles (offline.losses.speckle_spectrum);"
          " spectrum loss: the trainer's term (16×16 tiles) against HQ")
    print("| output | total | " + " | ".join(f"axial {b}" for b in BANDS) + " | "
          + " | ".join(f"lateral {b}" for b in BANDS) + " | spectrum loss |\n" + "|---" * (3 + 2 * len(BANDS)) + "|")
    for name, images in sets.items():
        power, _ = speckle_spectrum(as_t(images), tissue, window=32, stride=8, keep=keep)
        ratio = lambda sel: float(power.numpy()[sel].sum() / ref.numpy()[sel].sum())
        # a band of one direction, summed over every frequency of the other
        cells = [ratio((fy >= lo) & (fy < hi)) for lo, hi in BANDS.values()]
        cells += [ratio((fx >= lo) & (fx < hi)) for lo, hi in BANDS.values()]
        loss = spectrum_loss(as_t(images), as_t(hq), tissue).item()
        print(f"| {name} | {ratio(np.ones_like(fy, bool)):.2f} | " + " | ".join(f"{c:.2f}" for c in cells)
              + f" | {loss:.3f} |")


if __name__ == "__main__":
    main()
