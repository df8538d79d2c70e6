"""Realism training without pretrained weights: a noise-injected transform net learns to *synthesise* speckle with
the statistics of the target domain, while keeping the input's anatomy.

Loss of the generator, per batch of paired crops (LQ → HQ, Seg → HQ):
    anatomy_weight     · L1 of low-passed output vs low-passed HQ (σ 3 px: anatomy, not speckle)
  + pixel_weight       · L1 at full resolution (small or 0: a large one predicts the conditional median, i.e. smooth)
  + mse_weight         · squared error at full resolution: the conditional mean. Alone, against HQ drawn with its own
                        scatterers (`usnst phantom --independent-hq`), it trains the speckle-free *base* that
                        engines.beam_speckle adds a scanner's grain to (`usnst speckle`)
  + adversarial_weight · LSGAN loss of a conditional PatchGAN discriminator (offline.patchgan)
  + tissue_d_weight    · LSGAN loss of a second, unconditional PatchGAN that only judges texture in tissue
                        (optionally the grain alone: local mean and contrast divided out)
  + texture_weight     · random-filter Gram texture loss, tile by tile against HQ (offline.losses)
  + histogram_weight   · 1-D Wasserstein distance of the crop's envelope powers to HQ's (the bright tail sets m)
  + nakagami_weight    · |log m| error of the envelope's Nakagami m, 16×16 block by block against HQ
  + local_histogram_weight · mean-removed grey-level distribution of each 16×16 tissue block against HQ's (shape)
  + correlation_weight · error of the speckle autocorrelation at lags 1–``correlation_lags`` against HQ's (grain)
  + brightness_weight  · mean grey level of each 16×16 tissue block against HQ's (the low-passed L1 aims at a median)
  + phase_weight       · spread of the high-passed texture's mean and RMS over pixel phases mod 4 (a decoder's grid)
  + spectrum_weight    · log-ratio of the texture's power spectrum (16×16 tissue tiles) to HQ's, every frequency
  + patch_distribution_weight · sliced Wasserstein distance of the normalised grain's 5×5 neighbourhoods to HQ's
  + grain_histogram_weight · distribution of the normalised fine texture against HQ's (sharp pits, broad grains)
The net's noise planes are the speckle source (distribution-matching losses make the noise weights grow); its
output is black wherever the input has no echo (``echo_mask``), so noise never paints outside the sector.

Validation is the realism report (offline.realism: Nakagami m, speckle FWHM, C2ST, low-passed SSIM) on held-out
frames, and the best checkpoint is the one with the lowest ``realism_score`` — not the lowest loss, which says
little about a GAN. The discriminator, both optimisers and the step are saved with the generator, and every step's
samples and noise come from generators seeded by (seed, step), so ``resume`` continues bit for bit.
"""
from __future__ import annotations

import copy
import csv
import logging
import math
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from usnst.engines.acoustics import ECHO_LEVEL, MEASURED_DYNAMIC_RANGE_DB
from usnst.engines.beam_speckle import META_KEY as SPECKLE_KEY
from usnst.engines.beam_speckle import BeamSpeckleConfig
from usnst.engines.checkpoint import save_checkpoint
from usnst.engines.fast_net import FastNet, FastNetConfig
from usnst.engines.geometry import echo_region
from usnst.engines.transformer_net import NetConfig, TransformerNet
from usnst.offline.datasets import read_triptych_folder
from usnst.offline.losses import (
    RandomFilterTexture,
    anatomy_loss,
    brightness_loss,
    correlation_loss,
    gaussian_lowpass,
    grain_histogram_loss,
    histogram_loss,
    local_histogram_loss,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    nakagami_loss,
    normalised_texture,
    patch_distribution_loss,
    phase_loss,
    pixel_loss,
    spectrum_loss,
)
from usnst.offline.patchgan import PatchDiscriminator, PatchGANConfig
from usnst.offline.realism import PATCH, C2STBudget, realism_report, tissue_mask
from usnst.offline.tasks import task
from usnst.trainer.base import (
    RunConfig,
    command_line,
    optimise,
    random_crops,
    save_state,
    split_held_out,
    step_generators,
    tissue_crops,
    uint8_runner,
)
from usnst.trainer.under_speckle import TrainingGrains, speckled_runner, under_stage
from usnst_io.media import read_stills

log = logging.getLogger(__name__)
STATE_FORMAT = "usnst-realism-state"
ARCHS = ("fast", "johnson")


@dataclass
class RealismConfig(RunConfig):
    out: str = "realism.pt"
    task: str = "lq2hq"
    arch: str = "fast"  # the CPU real-time net, or the Johnson net
    channels: int = 96  # fast
    speckle: bool = False  # fast: a speckle head (engines.fast_net.SpeckleHead) instead of folded noise
    speckle_psf: str = "free"  # its PSF: any 7×7 kernel, or a Gaussian with learned widths
    base_weight: float = 0.0  # speckle head: squared error of its base image (the local mean grey) to HQ
    base_sigma: float = 0.0  # … to HQ low-passed by this σ (px): the mean grey without HQ's own speckle
    blocks: int = 8  # fast
    width: int = 16  # johnson
    n_residual: int = 5  # johnson
    skip_kernel: int = 0  # johnson: > 0, the input skip is a learned k×k filter (engines.transformer_net.SkipFilter)
    steps: int = 2000
    lr: float = 1e-3
    d_lr: float = 1e-3
    anatomy_weight: float = 1.0
    pixel_weight: float = 0.2
    mse_weight: float = 0.0  # squared error to HQ (the conditional mean: a base for the beam-speckle stage)
    beam_speckle: bool = False  # train the net as the base under engines.beam_speckle, fitted to the targets first
    adversarial_weight: float = 0.1
    texture_weight: float = 0.0
    histogram_weight: float = 0.0  # envelope-power distribution (sorted values) against HQ's
    dynamic_range_db: float = MEASURED_DYNAMIC_RANGE_DB  # display range assumed to recover the envelope from grey
    nakagami_weight: float = 0.0  # block Nakagami m against HQ's
    local_histogram_weight: float = 0.0  # local (16×16 tissue block) speckle histogram against HQ's
    correlation_weight: float = 0.0  # speckle autocorrelation (lags 1 … correlation_lags) against HQ's
    correlation_lags: int = 2
    correlation_window: int = 0  # > 0: compare the autocorrelation tile by tile (window×window), not per crop
    brightness_weight: float = 0.0  # mean grey of 16×16 tissue blocks against HQ's
    phase_weight: float = 0.0  # fine texture alike at every pixel phase mod 4 (no pixel-shuffle grid)
    spectrum_weight: float = 0.0  # texture power spectrum in tissue tiles against HQ's
    patch_distribution_weight: float = 0.0  # joint distribution of the grain's 5×5 neighbourhoods against HQ's
    grain_histogram_weight: float = 0.0  # the normalised fine texture's grey-level distribution against HQ's (skew)
    val_every: int = 250
    val_images: int = 8
    val_c2st_steps: int = 1000  # the validation classifier's budget: too few steps and every checkpoint reads ~0.5
    resume: bool = False
    resume_from: str | None = None  # a state file of another run: continue it under this run's losses (a second stage)
    style: str | None = None  # unpaired tasks (hq2clinical): the target-domain images (folder, cine, DICOM)
    init: str | None = None  # start the generator from this checkpoint's weights (same architecture); fresh optimisers
    d_spectral_norm: bool = True  # False: a discriminator that keeps learning (offline.patchgan)
    tissue_d_weight: float = 0.0  # a second, unconditional discriminator scoring only patches wholly in tissue
    tissue_d_normalise: bool = False  # … shown the grain alone (offline.losses.normalised_texture), not raw grey
    tissue_d_spectral_norm: bool | None = None  # … with spectral norm (None: as d_spectral_norm)
    ema: float = 0.0  # > 0: validate and save an exponential moving average of the generator's weights (decay)


def tissue_scores(tissue: torch.Tensor, scores: torch.Tensor, reach: int = PATCH) -> torch.Tensor:
    """Which patch scores (bool, ``scores``' shape) judge texture alone: those whose patch — taken as reach×reach,
    the discriminator's receptive field (34 px) and the C2ST's patch (32 px) — lies wholly in ``tissue``. Whole-crop
    scores also judge anatomy and the sector's edge, which the conditional discriminator already sees; a
    classifier that tells a model from HQ looks at tissue texture only (offline.realism)."""
    whole = torch.nn.functional.avg_pool2d(tissue.to(scores.dtype), reach, stride=1) > 0.999
    return torch.nn.functional.interpolate(whole.to(scores.dtype), size=scores.shape[-2:], mode="nearest") > 0.5


def realism_score(report: dict) -> float:
    """Lower is better: C2ST accuracy above chance, plus the log-ratio errors of Nakagami m and speckle FWHM against
    the target's, minus the low-passed SSIM (anatomy kept). Used to pick the best checkpoint."""
    out, tgt = report["output"], report["target"]
    errors = [abs(math.log(max(out[k], 1e-6) / max(tgt[k], 1e-6))) for k in ("nakagami_m", "fwhm_axial_px", "fwhm_lateral_px")]
    value = 2 * (report["c2st"] - 0.5) + sum(errors) - report.get("lowpass_ssim", 0.0)
    return value if math.isfinite(value) else float("inf")


def _tissue_d_spectral_norm(cfg: RealismConfig) -> bool:
    return cfg.d_spectral_norm if cfg.tissue_d_spectral_norm is None else cfg.tissue_d_spectral_norm


def describe_losses(cfg: RealismConfig, paired: bool) -> str:
    """The generator's loss as a model card states it: the terms with non-zero weight."""
    names = [("base_weight", "squared error of the speckle head's base to HQ"
              + (f" low-passed (σ {cfg.base_sigma:g} px)" if cfg.base_sigma else "")),
             ("anatomy_weight", "low-passed L1 to " + ("HQ" if paired else "the input")),
             ("pixel_weight", "L1"),
             ("mse_weight", "squared error"),
             ("adversarial_weight", ("conditional" if paired else "unconditional") + " PatchGAN (LSGAN"
              + (", spectral norm)" if cfg.d_spectral_norm else ")")),
             ("texture_weight", "random-filter texture" + ("" if paired else " (average style)")),
             ("histogram_weight", "envelope-power histogram"), ("nakagami_weight", "block Nakagami m"),
             ("local_histogram_weight", "local speckle histogram"),
             ("correlation_weight", f"speckle autocorrelation (lags 1–{cfg.correlation_lags}"
                                    + (f", {cfg.correlation_window}×{cfg.correlation_window} tiles)" if cfg.correlation_window else ")")),
             ("brightness_weight", "tissue block brightness"), ("phase_weight", "texture phase grid"),
             ("spectrum_weight", "texture power spectrum"),
             ("patch_distribution_weight", "grain neighbourhood distribution (sliced Wasserstein, 5×5)"),
             ("grain_histogram_weight", "normalised grain histogram"),
             ("tissue_d_weight", "unconditional PatchGAN on tissue "
              + ("grain, locally normalised" if cfg.tissue_d_normalise else "texture")
              + " (LSGAN" + (", spectral norm)" if _tissue_d_spectral_norm(cfg) else ")"))]
    terms = [f"{getattr(cfg, k):g} × {label}" for k, label in names if getattr(cfg, k)]
    averaged = f"; the generator's weights averaged (EMA, decay {cfg.ema:g})" if cfg.ema else ""
    under = "; judged under the beam-speckle stage (the net is its base)" if cfg.beam_speckle else ""
    return "realism: " + " + ".join(terms) + averaged + under + "; no pretrained weights"


def build_generator(cfg: RealismConfig) -> torch.nn.Module:
    if cfg.arch == "fast":
        return FastNet(FastNetConfig(cfg.channels, cfg.blocks, noise=not cfg.speckle, echo_mask=True,
                                     speckle=cfg.speckle, speckle_psf=cfg.speckle_psf))
    if cfg.arch == "johnson":
        return TransformerNet(NetConfig(cfg.width, cfg.n_residual, noise=True, echo_mask=True, residual=True,
                                         skip_kernel=cfg.skip_kernel))
    raise ValueError(f"arch must be one of {ARCHS}, got {cfg.arch!r}")


def validate(net, samples, source: str, seed: int, style: list[np.ndarray] | None = None,
             budget: C2STBudget = C2STBudget(steps=1000, repeats=1), speckle: BeamSpeckleConfig | None = None) -> dict:
    """The realism report of held-out outputs (noise from a fixed seed) against their HQ frames — or, unpaired,
    against the style set, with anatomy compared to the input; ``speckle``: the outputs under that stage."""
    run = uint8_runner(net, torch.Generator().manual_seed(seed))
    if speckle is not None:
        run = speckled_runner(run, speckle, seed)
    inputs = [getattr(t, source) for t in samples]
    report = realism_report([run(x) for x in inputs], [t.hq for t in samples] if style is None else style,
                            [t.seg for t in samples], references=None if style is None else inputs, budget=budget,
                            patches_per_image=30)
    net.train()
    return report


def _noise_weight(net) -> float:
    """How much the net uses its noise: mean |weight| on the noise inputs (grows as it learns to make speckle)."""
    if isinstance(net, FastNet):
        f2 = net.config.factor ** 2
        if net.config.speckle:  # the speckle head's contrast where the tail predicts nothing else
            return float(torch.nn.functional.softplus(net.tail.bias[f2:].detach()).mean())
        return float(net.head.weight[:, f2:].detach().abs().mean())
    return float(np.mean([m.weight.abs().mean().item() for m in (net.noise1, net.noise2)]))


def train(cfg: RealismConfig, stop: threading.Event | None = None) -> dict:
    """Train as ``cfg`` says; ``stop`` (set by SIGINT/SIGTERM in the CLI) ends the run after the current step, with
    the resumable state saved, so `--resume` continues exactly where it stopped."""
    if cfg.base_weight and not (cfg.arch == "fast" and cfg.speckle):
        raise ValueError("--base-weight needs the speckle head (--arch fast --speckle)")
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    spec = task(cfg.task)
    style = None
    if not spec.paired:
        if not cfg.style:
            raise ValueError(f"{cfg.task} is unpaired: give --style, the target-domain images (e.g. `usnst clean` output)")
        if (cfg.pixel_weight or cfg.mse_weight or cfg.nakagami_weight or cfg.correlation_weight or cfg.local_histogram_weight
                or cfg.brightness_weight or cfg.spectrum_weight or cfg.tissue_d_weight
                or cfg.patch_distribution_weight or cfg.grain_histogram_weight):
            raise ValueError("pixel, squared-error, nakagami, local histogram, correlation, brightness, spectrum, patch distribution, "
                             "grain histogram and tissue discriminator terms need aligned pairs and their label maps; "
                             f"set them to 0 for {cfg.task} (the unpaired terms: anatomy to the input, adversarial, texture, histogram)")
        style = read_stills(cfg.style)
        if not style:
            raise ValueError(f"no images in --style {cfg.style}")
    if cfg.beam_speckle and not spec.paired:
        raise ValueError("--beam-speckle trains on paired crops (the grain is placed by each frame's fan); for "
                         f"{cfg.task} fit the stage afterwards with `usnst speckle --style`")
    samples = read_triptych_folder(cfg.data)
    if min(min(t.hq.shape) for t in samples) < cfg.crop:
        raise ValueError(f"crop {cfg.crop} is larger than the smallest panel in {cfg.data}")
    val, train_samples = split_held_out(samples, cfg.val_fraction)
    val = val[:cfg.val_images]
    # (input, HQ, tissue): the tissue mask (eroded label regions) is where speckle statistics are compared
    pairs = [(getattr(t, spec.source), t.hq, tissue_mask(t.hq, t.seg)) for t in train_samples]
    speckle = grains = None
    if cfg.beam_speckle:  # the stage's grain measured on the targets, then formed on every training frame's fan
        from usnst.offline.speckle_fit import fit_beam_speckle

        fit = fit_beam_speckle([t.hq for t in train_samples], [t.seg for t in train_samples])
        speckle = fit["config"]
        log.info("beam speckle fitted to %d target frames: %s", fit["frames"], speckle)
        grains = TrainingGrains(speckle, [p[0] for p in pairs], cfg.seed)
    out = Path(cfg.out)
    state_path = out.with_name(out.stem + ".state.pt")
    log_path = out.with_name(out.stem + ".log.csv")

    net = build_generator(cfg)
    ema = copy.deepcopy(net).requires_grad_(False) if cfg.ema else None
    disc = PatchDiscriminator(PatchGANConfig(conditional=spec.paired, spectral_norm=cfg.d_spectral_norm))
    texture = RandomFilterTexture() if cfg.texture_weight else None
    opt_g = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.d_lr, betas=(0.5, 0.999))
    tissue_disc = tissue_opt = None
    untextured = 0  # steps whose crops held no patch wholly in tissue: the tissue discriminator sat them out
    if cfg.tissue_d_weight:
        tissue_disc = PatchDiscriminator(PatchGANConfig(conditional=False, spectral_norm=_tissue_d_spectral_norm(cfg)))
        tissue_opt = torch.optim.Adam(tissue_disc.parameters(), lr=cfg.d_lr, betas=(0.5, 0.999))
    step, best, history = 0, None, []
    if cfg.init and not cfg.resume:
        from usnst.engines.checkpoint import load_checkpoint

        start, _ = load_checkpoint(cfg.init)
        weights = start.state_dict()
        if cfg.arch == "johnson" and cfg.skip_kernel and not any(k.startswith("skip.") for k in weights):
            weights.update({k: v for k, v in net.state_dict().items() if k.startswith("skip.")})  # identity: as before
        try:
            net.load_state_dict(weights)
        except RuntimeError as exc:
            raise ValueError(f"--init {cfg.init}: not the architecture this run builds ({exc})") from None
        if ema is not None:
            ema.load_state_dict(net.state_dict())
        log.info("generator initialised from %s", cfg.init)
    if cfg.resume or cfg.resume_from:
        source = Path(cfg.resume_from) if cfg.resume_from and not (cfg.resume and state_path.exists()) else state_path
        if not source.exists():
            raise FileNotFoundError(f"nothing to resume: {source} does not exist")
        state = torch.load(source, map_location="cpu", weights_only=True)
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"{source} is not a usnst realism training state")
        net.load_state_dict(state["generator"])
        if ema is not None:  # a state saved without an average starts one from its generator
            ema.load_state_dict(state.get("ema") or state["generator"])
        disc.load_state_dict(state["discriminator"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        if tissue_disc is not None and "tissue_discriminator" in state:  # else a new stage starts a fresh one
            tissue_disc.load_state_dict(state["tissue_discriminator"])
            tissue_opt.load_state_dict(state["opt_tissue_d"])
        step, best = state["step"], state["best"] if source == state_path else None  # a new stage keeps its own best
        if source != state_path:  # a new stage runs at its own learning rates (the optimiser state carries the old)
            for opt, lr in ((opt_g, cfg.lr), (opt_d, cfg.d_lr), (tissue_opt, cfg.d_lr)):
                if opt is None:
                    continue
                for group in opt.param_groups:
                    group["lr"] = lr
        log.info("resumed from %s at step %d", source, step)
    meta_base = {"task": cfg.task, "training": describe_losses(cfg, spec.paired),
                 "training_data": f"{len(train_samples)} triptychs from {cfg.data}"
                 + (f"; style: {len(style)} images from {cfg.style}" if style else ""),
                 "config": asdict(cfg), "command": command_line(),
                 **({SPECKLE_KEY: speckle.to_dict()} if speckle is not None else {})}

    def checkpoint_state() -> dict:
        """Everything a resume needs: both nets, both optimisers, the step and the best score so far."""
        return {"format": STATE_FORMAT, "step": step, "best": best, "generator": net.state_dict(),
                "discriminator": disc.state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                "config": asdict(cfg), **({"ema": ema.state_dict()} if ema is not None else {}),
                **({"tissue_discriminator": tissue_disc.state_dict(), "opt_tissue_d": tissue_opt.state_dict()}
                   if tissue_disc is not None else {})}

    model = ema if ema is not None else net  # what is validated and saved

    net.train()
    t0 = time.monotonic()
    bar = tqdm(total=cfg.steps, initial=step, desc=f"realism {cfg.arch}", unit="step",
               disable=None if cfg.progress else True)
    while step < cfg.steps and not (stop is not None and stop.is_set()):
        rng, gen = step_generators(cfg.seed, step)
        if grains is not None:  # paired: each crop with its frame's grain at the same place
            x, y, tissue, grain = random_crops([p + (g,) for p, g in zip(pairs, grains.at(step))], cfg.batch,
                                               cfg.crop, rng)
            condition, anatomy_ref = x, y
        elif style is None:  # paired: y is x's HQ, aligned; the discriminator sees the input beside each image
            x, y, tissue = random_crops(pairs, cfg.batch, cfg.crop, rng)
            condition, anatomy_ref = x, y
        else:  # unpaired: y is any target-domain texture; anatomy is the input's own
            x = tissue_crops([p[0] for p in pairs], cfg.batch, cfg.crop, rng)
            y = tissue_crops(style, cfg.batch, cfg.crop, rng)
            condition, anatomy_ref = None, x
        fake = net(x, net.make_noise(x, gen))
        if grains is not None:  # what the engine will show: the losses judge the sum, the net learns the base
            fake = under_stage(fake, x, grain, speckle)
        d_loss = lsgan_discriminator_loss(disc(y, condition), disc(fake.detach(), condition))
        optimise(opt_d, d_loss)
        terms = {"anatomy": cfg.anatomy_weight * anatomy_loss(fake, anatomy_ref),
                 "adversarial": cfg.adversarial_weight * lsgan_generator_loss(disc(fake, condition))}
        if tissue_disc is not None:
            view = normalised_texture if cfg.tissue_d_normalise else (lambda image: image)
            real = tissue_disc(view(y))
            where = tissue_scores(tissue, real)
            if where.any():
                optimise(tissue_opt, lsgan_discriminator_loss(real, tissue_disc(view(fake.detach())), where))
                terms["tissue_adversarial"] = cfg.tissue_d_weight * lsgan_generator_loss(tissue_disc(view(fake)), where)
            else:
                untextured += 1
        if cfg.base_weight:
            base, _ = net.base_and_contrast(x)
            target = gaussian_lowpass(y, cfg.base_sigma) if cfg.base_sigma else y
            terms["base"] = cfg.base_weight * torch.mean((base * echo_region(x) - target) ** 2)
        if cfg.pixel_weight:
            terms["pixel"] = cfg.pixel_weight * pixel_loss(fake, y)
        if cfg.mse_weight:
            terms["mse"] = cfg.mse_weight * torch.mean((fake - y) ** 2)
        if texture is not None:  # paired: tile by tile; unpaired: the batch's average style (thesis' Gram average)
            terms["texture"] = cfg.texture_weight * (texture(fake, y) if style is None else texture.style_loss(
                fake, [g.mean(0, keepdim=True) for g in texture.image_grams(y)]))
        if cfg.histogram_weight:
            terms["histogram"] = cfg.histogram_weight * histogram_loss(fake, y, cfg.dynamic_range_db)
        if cfg.nakagami_weight:
            terms["nakagami"] = cfg.nakagami_weight * nakagami_loss(fake, y, cfg.dynamic_range_db, tissue=tissue)
        if cfg.local_histogram_weight:
            terms["local_histogram"] = cfg.local_histogram_weight * local_histogram_loss(fake, y, tissue)
        if cfg.correlation_weight:
            terms["correlation"] = cfg.correlation_weight * correlation_loss(
                fake, y, tissue, cfg.correlation_lags, cfg.correlation_window)
        if cfg.brightness_weight:
            terms["brightness"] = cfg.brightness_weight * brightness_loss(fake, y, tissue)
        if cfg.phase_weight:  # paired: in tissue; unpaired: wherever the crop has echo
            where = tissue if style is None else (x > ECHO_LEVEL)
            terms["phase"] = cfg.phase_weight * phase_loss(fake, where)
        if cfg.spectrum_weight:
            terms["spectrum"] = cfg.spectrum_weight * spectrum_loss(fake, y, tissue)
        if cfg.patch_distribution_weight:
            terms["patch_distribution"] = cfg.patch_distribution_weight * patch_distribution_loss(
                fake, y, tissue, generator=gen)
        if cfg.grain_histogram_weight:
            terms["grain_histogram"] = cfg.grain_histogram_weight * grain_histogram_loss(fake, y, tissue)
        g_loss = sum(terms.values())
        optimise(opt_g, g_loss)
        if ema is not None:
            with torch.no_grad():
                for averaged, current in zip(ema.state_dict().values(), net.state_dict().values()):
                    averaged.lerp_(current, 1.0 - cfg.ema)
        step += 1
        row = {"step": step, "d_loss": d_loss.item(), **{k: v.item() for k, v in terms.items()},
               "noise_weight": _noise_weight(net)}
        bar.update(1)
        bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k != "step"})
        if val and (step % cfg.val_every == 0 or step == cfg.steps):
            report = validate(model, val, spec.source, cfg.seed, style, C2STBudget(steps=cfg.val_c2st_steps, repeats=1),
                              speckle)
            score = realism_score(report)
            row.update(score=score, c2st=report["c2st"], nakagami_m=report["output"]["nakagami_m"],
                       fwhm_axial=report["output"]["fwhm_axial_px"], fwhm_lateral=report["output"]["fwhm_lateral_px"],
                       lowpass_ssim=report["lowpass_ssim"], ssim=report["ssim"])
            log.info("step %d: realism score %.3f %s", step, score, {k: round(v, 3) for k, v in row.items()
                                                                    if isinstance(v, float)})
            if best is None or score < best:
                best = score
                save_checkpoint(out, model, {**meta_base, "steps": step, "validation": report, "realism_score": score})
            save_state(state_path, checkpoint_state())
        history.append(row)
    bar.close()
    if untextured:
        log.warning("tissue discriminator: %d of this run's steps had no %d×%d patch wholly in tissue in their crops "
                    "and trained without it (larger --crop or frames help)", untextured, PATCH, PATCH)
    if not out.exists():  # no validation split: the last generator is the model
        save_checkpoint(out, model, {**meta_base, "steps": step})
    save_state(state_path, checkpoint_state())
    if history:
        fields = list(dict.fromkeys(k for r in history for k in r))
        new = not (cfg.resume and log_path.exists())
        with open(log_path, "w" if new else "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerows(history)
    return {"steps": step, "best_score": best, "seconds": time.monotonic() - t0, "out": str(out),
            "state": str(state_path), "last": history[-1] if history else {}, "interrupted": step < cfg.steps}
