"""The loss terms every optimisation and training in usnst is built from, in one place: content (feature MSE), style
(Gram matrices, whole-image or per segmentation label), and the pixel terms of paired training. Optimisation NST
(offline.nst) and the trainers (trainer/) compose these; a new loss goes here beside its siblings.

Style as the thesis defines it (Gatys et al. 2016, Eq. 2.5): mean over the style layers of ‖G(out) − G(style)‖²,
each Gram normalised by its feature size so layers of different sizes weigh alike.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from usnst.engines.acoustics import MEASURED_DYNAMIC_RANGE_DB


def gram(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) → (N, C, C) = F Fᵀ / (C·H·W): normalised by feature size so layers of different sizes
    weigh alike."""
    n, c, h, w = features.shape
    f = features.reshape(n, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


def masked_gram(features: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Gram of the features inside ``mask`` (N, 1, H, W), normalised by the mask's area instead of H·W, so the
    texture of a small region counts as much as that of a large one. An all-ones mask gives ``gram``."""
    n, c, h, w = features.shape
    f = (features * mask).reshape(n, c, h * w)
    area = mask.reshape(n, -1).sum(dim=1).clamp_min(eps).view(n, 1, 1)
    return f @ f.transpose(1, 2) / (c * area)



@dataclass
class StyleTarget:
    """Target Grams per style layer: ``whole[layer]`` for plain NST, or ``by_label[label][layer]`` for the
    augmented loss."""

    whole: dict[str, torch.Tensor] = field(default_factory=dict)
    by_label: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)

    @property
    def layers(self) -> list[str]:
        return list(self.whole or next(iter(self.by_label.values()), {}))


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Feature MSE at the content layer."""
    return F.mse_loss(features, target)


def _gram_distance(g: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """‖G − G_target‖² per sample, averaged over the batch."""
    return ((g - target) ** 2).sum(dim=(-2, -1)).mean()


def style_loss(features: dict[str, torch.Tensor], target: StyleTarget,
               out_masks: dict[int, dict[str, torch.Tensor]] | None = None) -> torch.Tensor:
    """Mean over layers of the Gram distance to ``target``. A per-label target (augmented loss) compares masked
    Grams, the output's features masked by ``out_masks[label][layer]``, over the labels both sides have."""
    if target.by_label:
        labels = [k for k in target.by_label if k in (out_masks or {})]
        if not labels:
            raise ValueError("no segmentation label is common to the content and the style")
        per_label = [torch.stack([_gram_distance(masked_gram(features[l], out_masks[k][l]), g)
                                  for l, g in target.by_label[k].items()]).mean() for k in labels]
        return torch.stack(per_label).mean()
    return torch.stack([_gram_distance(gram(features[l]), g) for l, g in target.whole.items()]).mean()


def pixel_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 to the paired target (the supervised models' loss; beyond the thesis for perceptual training)."""
    return F.l1_loss(output, target)


def ssim_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 − SSIM to the paired target, with the differentiable SSIM that equals the reported metric."""
    from usnst.offline.ssim_torch import ssim

    return 1 - ssim(output.float().clamp(0, 1), target.float())


# -- terms that learn the speckle distribution without pretrained weights ------------------------------------------
def gaussian_lowpass(x: torch.Tensor, sigma: float = 3.0) -> torch.Tensor:
    """Separable Gaussian blur of (N, 1, H, W) with reflect padding: keeps anatomy, erases speckle."""
    radius = max(1, int(round(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    return F.conv2d(x, k.view(1, 1, -1, 1))


def anatomy_loss(output: torch.Tensor, target: torch.Tensor, sigma: float = 3.0) -> torch.Tensor:
    """L1 between low-passed images: the output must keep the target's (or input's) anatomy but may make its own
    speckle — a pixel loss on full-resolution images would pull the speckle to its conditional mean (smooth)."""
    return F.l1_loss(gaussian_lowpass(output, sigma), gaussian_lowpass(target, sigma))


class RandomFilterTexture(torch.nn.Module):
    """Texture statistics from fixed random filters (Ustyuzhaninov et al. 2017, "Texture synthesis using shallow
    convolutional networks with random filters"): at several scales (the image average-pooled ×1, ×2, ×4), banks of
    zero-mean, unit-norm random k×k filters (k = 3 and 7) and a ReLU; Gram matrices of the responses on tiles of
    ``tile``×``tile`` feature pixels. The loss is the *relative* Gram error per tile, ‖G − G_t‖² / ‖G_t‖², so a
    dark tile counts as much as a bright one and no scale or kernel size swamps the others (a per-layer normalisation
    let noise fill the background in the pilot). The denominator has a floor of ``floor`` × the mean tile energy:
    without it near-black tiles (fluid, shadow) blew the term up to ~1e2 and drove a GAN run to black speckle (m 0.05);
    tiles whose target holds no texture at all (outside the sector) are skipped. On 256² phantoms against HQ it reads
    ≈ 0.2 for LQ, 0.1 for an early realism model, 0.02 for HQ with new speckle. No pretrained weights: the filters
    come from ``seed``."""

    def __init__(self, filters: int = 32, kernels: tuple[int, ...] = (3, 7), scales: tuple[int, ...] = (1, 2, 4),
                 tile: int = 16, seed: int = 0, floor: float = 0.1):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.kernels, self.scales, self.tile, self.floor = kernels, scales, tile, floor
        for k in kernels:
            w = torch.randn(filters, 1, k, k, generator=gen)
            w = w - w.mean(dim=(2, 3), keepdim=True)
            w = w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            self.register_buffer(f"bank{k}", w)

    def tile_grams(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per scale and kernel: (N, tiles, C, C) Gram matrices of ``x`` (N, 1, H, W)."""
        out = []
        for s in self.scales:
            xs = F.avg_pool2d(x, s) if s > 1 else x
            for k in self.kernels:
                f = F.relu(F.conv2d(F.pad(xs, (k // 2,) * 4, mode="reflect"), getattr(self, f"bank{k}")))
                n, c, h, w = f.shape
                t = self.tile
                if h < t or w < t:
                    continue
                f = f[:, :, : h // t * t, : w // t * t].reshape(n, c, h // t, t, w // t, t)
                f = f.permute(0, 2, 4, 1, 3, 5).reshape(n, (h // t) * (w // t), c, t * t)
                out.append(f @ f.transpose(-1, -2) / (t * t))
        return out

    def image_grams(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per scale and kernel: (N, C, C) Gram matrices over the whole image (a style target that need not be
        aligned with the output: optimisation NST, unpaired style sets)."""
        out = []
        for s in self.scales:
            xs = F.avg_pool2d(x, s) if s > 1 else x
            for k in self.kernels:
                f = F.relu(F.conv2d(F.pad(xs, (k // 2,) * 4, mode="reflect"), getattr(self, f"bank{k}")))
                out.append(gram(f) * f.shape[1])  # gram() divides by C·H·W; per-pixel mean is what compares
        return out

    def style_loss(self, output: torch.Tensor, target_grams: list[torch.Tensor]) -> torch.Tensor:
        """Mean relative Gram error of the whole image against ``target_grams`` (from ``image_grams``)."""
        terms = [((g - t) ** 2).sum(dim=(-2, -1)) / (t ** 2).sum(dim=(-2, -1)).clamp_min(1e-12)
                 for g, t in zip(self.image_grams(output), target_grams)]
        return torch.stack([t.mean() for t in terms]).mean()

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        terms = []
        for g, gt in zip(self.tile_grams(output), self.tile_grams(target)):
            energy = (gt ** 2).sum(dim=(-2, -1))
            floor = self.floor * energy.mean().clamp_min(1e-12)
            textured = energy > 1e-2 * floor
            rel = ((g - gt) ** 2).sum(dim=(-2, -1)) / (energy + floor)
            terms.append((rel * textured).sum() / textured.sum().clamp_min(1))
        return torch.stack(terms).mean()


def envelope_power(x: torch.Tensor, dynamic_range_db: float = MEASURED_DYNAMIC_RANGE_DB) -> torch.Tensor:
    """R² of the envelope behind log-compressed grey x in [0, 1] displayed over ``dynamic_range_db``, scaled so white
    is 1 (the moments and ratios taken of it are scale-free)."""
    return 10.0 ** ((x - 1.0) * dynamic_range_db / 10.0)


def block_nakagami(x: torch.Tensor, dynamic_range_db: float = MEASURED_DYNAMIC_RANGE_DB, window: int = 16) -> torch.Tensor:
    """Nakagami m = E[R²]² / Var(R²) of the envelope R recovered from log-compressed grey (x in [0, 1]), per
    window×window block: (N, 1, H/window, W/window). Differentiable twin of offline.metrics.nakagami."""
    power = envelope_power(x, dynamic_range_db)
    omega = F.avg_pool2d(power, window)
    var = (F.avg_pool2d(power ** 2, window) - omega ** 2).clamp_min(1e-12)
    return omega ** 2 / var


def nakagami_loss(output: torch.Tensor, target: torch.Tensor, dynamic_range_db: float = MEASURED_DYNAMIC_RANGE_DB, window: int = 16,
                  tissue: torch.Tensor | None = None, min_level: float = 10 / 255) -> torch.Tensor:
    """Mean |log m(output) − log m(target)| over the blocks lying wholly in ``tissue`` (default: where the target
    has echo throughout). The envelope's moments are ruled by the brightest speckle, which a grey-level loss (L1,
    sorted-L1 histogram) barely weighs: this term pins the speckle's shape m block by block, where the adversarial
    and texture terms leave it loose. Blocks across anatomical edges have no speckle m to match: pass a tissue mask
    (eroded label regions) where there is one."""
    region = tissue.to(output.dtype) if tissue is not None else (target >= min_level).to(output.dtype)
    lit = -F.max_pool2d(-region, window)
    error = (block_nakagami(output, dynamic_range_db, window).log() - block_nakagami(target, dynamic_range_db,
                                                                                      window).log()).abs()
    return (error * lit).sum() / lit.sum().clamp_min(1)


def local_histogram_loss(output: torch.Tensor, target: torch.Tensor, tissue: torch.Tensor, window: int = 16
                         ) -> torch.Tensor:
    """Speckle's local grey-level distribution, matched block by block: in each window×window block lying wholly in
    ``tissue``, the block-mean-removed values of output and target are sorted and compared (L1) — the 1-D
    Wasserstein distance of the two local histograms, blind to the block's brightness (anatomy) but not to its
    shape. Log-compressed speckle is skewed dark (a long dark tail, bright peaks held close to the mean), and
    Nakagami m is ruled by how far the bright peaks reach; a net that sharpens blurred speckle symmetrically gets
    both wrong while its grey std and grain are right."""
    blocks = lambda x: F.unfold(x, window, stride=window)  # (N, window², blocks)
    keep = blocks(tissue.to(output.dtype)).amin(dim=1) > 0.5  # (N, blocks)
    if not keep.any():
        return output.sum() * 0
    a, b = blocks(output), blocks(target)
    a = (a - a.mean(dim=1, keepdim=True)).sort(dim=1).values
    b = (b - b.mean(dim=1, keepdim=True)).sort(dim=1).values
    return (a - b).abs().mean(dim=1)[keep].mean()


def speckle_correlation(x: torch.Tensor, lit: torch.Tensor, lags: tuple[int, ...] = (1, 2),
                        sigma: float = 4.0) -> torch.Tensor:
    """Normalised autocorrelation of the speckle (x minus its σ-px Gaussian mean) inside ``lit``, per image, at
    the given axial then lateral lags: (N, 2·len(lags)). The lag-1 value sets the FWHM that offline.realism reports
    (there measured inside tissue only: FWHM = 1 / (1 − r₁) while r₁ < ½)."""
    energy, products = _lag_products(x, lit, lags, sigma)
    whole = lambda t: t.sum(dim=(1, 2, 3))
    return torch.stack([whole(p) / whole(energy).clamp_min(1e-12) for p in products], dim=1)


def _lag_products(x: torch.Tensor, lit: torch.Tensor, lags: tuple[int, ...], sigma: float
                  ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The speckle (x minus its σ-px Gaussian mean, zero outside ``lit``) squared, and its products with itself
    shifted by each lag, axial then lateral, each kept at the first pixel of the pair (zero-padded to x's size)."""
    s = (x - gaussian_lowpass(x, sigma)) * lit
    axial = [F.pad(s[:, :, :-k, :] * s[:, :, k:, :], (0, 0, 0, k)) for k in lags]
    lateral = [F.pad(s[:, :, :, :-k] * s[:, :, :, k:], (0, k)) for k in lags]
    return s * s, axial + lateral


def correlation_loss(output: torch.Tensor, target: torch.Tensor, tissue: torch.Tensor, max_lag: int = 2
                     ) -> torch.Tensor:
    """L1 between the speckle autocorrelations (lags 1 … ``max_lag``, axial and lateral) of output and target inside
    ``tissue`` (N, 1, H, W): speckle grain size, matched directly (the texture and adversarial terms left the
    real-time net's grain 17 % long axially). Lags 1–2 set the FWHM; lags 3–4 are the tail where a net that
    sharpens blurred input speckle keeps some of the input's lateral correlation (a cue a patch classifier uses).
    The mask must keep anatomical edges out (e.g. eroded label regions, offline.realism.tissue_mask): over the whole
    lit sector the edges' own correlation hides the speckle's."""
    tissue = tissue.to(output.dtype)
    lags = tuple(range(1, max_lag + 1))
    return (speckle_correlation(output, tissue, lags) - speckle_correlation(target, tissue, lags)).abs().mean()


def brightness_loss(output: torch.Tensor, target: torch.Tensor, tissue: torch.Tensor, window: int = 16) -> torch.Tensor:
    """Mean |block mean(output) − block mean(target)| over window×window blocks lying wholly in ``tissue``: the part
    of the local speckle distribution that ``local_histogram_loss`` leaves out. The low-passed L1 of
    ``anatomy_loss`` does not pin it: log-compressed speckle is skewed, so an L1 of lightly blurred speckle aims at
    its median, not its mean (the realism-trained real-time net sat 4 grey levels above HQ in tissue, a cue a patch
    classifier uses); a 256-pixel block mean is no longer skewed."""
    keep = -F.max_pool2d(-tissue.to(output.dtype), window) > 0.5
    if not keep.any():
        return output.sum() * 0
    return (F.avg_pool2d(output, window) - F.avg_pool2d(target, window)).abs()[keep].mean()


def lsgan_discriminator_loss(real: torch.Tensor, fake: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
    """Least-squares GAN (Mao et al. 2017): real patches to 1, generated ones to 0; ``where`` (bool, the scores'
    shape): only those patch scores count."""
    if where is not None:
        real, fake = real[where], fake[where]
    return 0.5 * (((real - 1) ** 2).mean() + (fake ** 2).mean())


def lsgan_generator_loss(fake: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
    """The generator wants its patches scored as real (only the ``where`` scores, if given)."""
    if where is not None:
        fake = fake[where]
    return 0.5 * ((fake - 1) ** 2).mean()
