"""Realism training without pretrained weights: a noise-injected transform net keeps the input's anatomy while its
output takes the look of the paired HQ panels.

The generator's loss is the weighted sum of the terms in trainer.terms (the table: anatomy, pixel, squared error,
PatchGAN, random-filter texture, Nakagami m, local histogram, autocorrelation, brightness — each with what it needs and
why). The net's output is black wherever the input has no echo (``echo_mask``), so its noise never paints outside the
sector; a scanner's grain is added after training by the beam-speckle stage (`usnst speckle`).

Validation is the realism report (offline.realism: Nakagami m, speckle FWHM, C2ST, low-passed SSIM) on held-out
frames, and the best checkpoint is the one with the lowest ``realism_score`` — not the lowest loss, which says
little about a GAN. The discriminator, both optimisers and the step are saved with the generator, and every step's
samples and noise come from generators seeded by (seed, step), so ``resume`` continues bit for bit (on one CPU
thread; on several, parallel sums may round differently between runs). One way starts
from a model's weights (``init``), one continues this run (``resume``).

Paired tasks only (LQ→HQ, Seg→HQ: an HQ panel of the same scene). Unpaired training against a set of real frames
(``--style``) read C2ST 1.00 against held-out scanners and no shipped recipe uses it (``docs/lab/real_scanners.md``):
a real scanner's look is fitted from real frames by ``usnst scanner-texture`` instead.
"""
from __future__ import annotations

import csv
import logging
import math
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from usnst.engines.checkpoint import save_checkpoint
from usnst.engines.fast_net import FastNet, FastNetConfig
from usnst.engines.transformer_net import NetConfig, TransformerNet
from usnst.offline.datasets import read_triptych_folder
from usnst.offline.losses import RandomFilterTexture, lsgan_discriminator_loss
from usnst.offline.patchgan import PatchDiscriminator, PatchGANConfig
from usnst.offline.realism import C2STBudget, realism_report, tissue_mask
from usnst.offline.tasks import task
from usnst.trainer import terms
from usnst.trainer.base import (
    RunConfig,
    command_line,
    held_out_by_folder,
    optimise,
    random_crops,
    save_state,
    step_generators,
    uint8_runner,
)
from usnst_io.atomic import atomic_path

log = logging.getLogger(__name__)
STATE_FORMAT = "usnst-realism-state"
ARCHS = ("fast", "johnson")
ARCH_OPTIONS = {"fast": ("channels", "blocks"), "johnson": ("width", "n_residual", "skip_kernel")}


@dataclass
class RealismConfig(RunConfig):
    out: str = "realism.pt"
    task: str = "lq2hq"
    arch: str = "fast"  # the CPU real-time net, or the Johnson net
    channels: int = 96  # fast
    blocks: int = 8  # fast
    width: int = 16  # johnson
    n_residual: int = 5  # johnson
    skip_kernel: int = 0  # johnson: > 0, the input skip is a learned k×k filter (engines.transformer_net.SkipFilter)
    steps: int = 2000
    lr: float = 1e-3
    d_lr: float = 1e-3  # the discriminator's
    max_grad_norm: float = 0.0  # > 0: the generator's gradient is scaled down to at most this L2 norm (0: never)
    weights: dict[str, float] = field(default_factory=terms.default_weights)  # per loss term (trainer.terms)
    correlation_lags: int = 2  # the autocorrelation term's largest lag
    val_every: int = 250
    val_images: int = 8
    val_c2st_steps: int = 1000  # the validation classifier's budget: too few steps and every checkpoint reads ~0.5
    resume: bool = False  # continue this run from its state file (OUT.state.pt)
    init: str | None = None  # start from a checkpoint's weights (fresh optimisers), or continue another run's state
    # (OTHER.state.pt: its nets, optimisers and step) as a new stage under this run's losses and rates
    device: str = "cpu"  # "cuda" trains on the GPU


def realism_score(report: dict) -> float:
    """Lower is better: C2ST accuracy above chance, plus the log-ratio errors of Nakagami m and speckle FWHM against
    the target's, minus the low-passed SSIM (anatomy kept). Used to pick the best checkpoint."""
    out, tgt = report["output"], report["target"]
    errors = [abs(math.log(max(out[k], 1e-6) / max(tgt[k], 1e-6))) for k in ("nakagami_m", "fwhm_axial_px", "fwhm_lateral_px")]
    value = 2 * (report["c2st"] - 0.5) + sum(errors) - report.get("lowpass_ssim", 0.0)
    return value if math.isfinite(value) else float("inf")


def build_generator(cfg: RealismConfig) -> torch.nn.Module:
    if cfg.arch == "fast":
        return FastNet(FastNetConfig(cfg.channels, cfg.blocks, noise=True, echo_mask=True))
    if cfg.arch == "johnson":
        return TransformerNet(NetConfig(cfg.width, cfg.n_residual, noise=True, echo_mask=True, residual=True,
                                         skip_kernel=cfg.skip_kernel))
    raise ValueError(f"arch must be one of {ARCHS}, got {cfg.arch!r}")


def validate(net, samples, source: str, seed: int, budget: C2STBudget = C2STBudget(steps=1000, repeats=1),
             device: str | torch.device = "cpu") -> dict:
    """The realism report of held-out outputs (noise from a fixed seed) against their HQ frames."""
    run = uint8_runner(net, torch.Generator().manual_seed(seed), device=device)
    report = realism_report([run(getattr(t, source)) for t in samples], [t.hq for t in samples],
                            [t.seg for t in samples], budget=budget, patches_per_image=30)
    net.train()
    return report


def _noise_weight(net) -> float:
    """How much the net uses its noise: mean |weight| on the noise inputs (grows as it learns to make speckle)."""
    if isinstance(net, FastNet):
        return float(net.head.weight[:, net.config.factor ** 2:].detach().abs().mean())
    return float(np.mean([m.weight.abs().mean().item() for m in (net.noise1, net.noise2)]))


def check(cfg: RealismConfig) -> None:
    """Refuse what this run cannot honour, before any data is read."""
    if cfg.arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {cfg.arch!r}")
    if not task(cfg.task).paired:
        raise ValueError(f"{cfg.task} has no HQ of the same scene to learn from: the realism trainer takes paired tasks "
                         f"only; a real scanner's look is fitted from real frames by `usnst scanner-texture`")
    terms.check_weights(cfg.weights)
    if cfg.init and cfg.resume:
        raise ValueError("--init starts this run from other weights, --resume continues this run: give one of them")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {cfg.device}: this PyTorch build sees no CUDA GPU (torch {torch.__version__})")


def _initialise(net, cfg: RealismConfig) -> None:
    """The generator from checkpoint ``cfg.init``'s weights; a Johnson net given a learned skip starts it as the
    identity."""
    from usnst.engines.checkpoint import load_checkpoint

    start, _ = load_checkpoint(cfg.init)
    weights = start.state_dict()
    if cfg.arch == "johnson" and cfg.skip_kernel and not any(k.startswith("skip.") for k in weights):
        weights.update({k: v for k, v in net.state_dict().items() if k.startswith("skip.")})  # identity: as before
    try:
        net.load_state_dict(weights)
    except RuntimeError as exc:
        raise ValueError(f"--init {cfg.init}: not the architecture this run builds ({exc})") from None
    log.info("generator initialised from %s", cfg.init)


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor, net: torch.nn.Module, max_norm: float) -> float:
    """One generator step, its gradient clipped to ``max_norm`` (if > 0); returns the gradient's norm before
    clipping, for the log. Why clip: Adam divides by a running gradient scale that adapts over ~1,000 steps, so one
    batch whose gradient is 100× the usual moves a weight ~30× the learning rate; under the texture term the noise
    head then makes louder grain, the next gradient is larger still, and the run diverges within a few steps."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(net.parameters(), max_norm if max_norm > 0 else math.inf)
    opt.step()
    return float(norm)


def _is_state(path: str) -> bool:
    """Whether ``path`` is a realism run's state (not a model checkpoint)."""
    if not Path(path).is_file():
        return False
    try:
        return torch.load(path, map_location="cpu", weights_only=True).get("format") == STATE_FORMAT
    except Exception:  # a checkpoint or a damaged file: load_checkpoint says which, in one line
        return False


def state_path(out: str | Path) -> Path:
    """Where a realism run writing ``out`` keeps its resumable state (``--resume``; a recipe resumes from it)."""
    out = Path(out)
    return out.with_name(out.stem + ".state.pt")


class TrainingLog:
    """The run's CSV log, written as training goes (a row per step, flushed), so a long run can be watched and an
    interrupted one keeps its rows; the columns are the loss table's terms with a weight, plus validation figures."""

    VALIDATION = ("score", "c2st", "nakagami_m", "fwhm_axial", "fwhm_lateral", "lowpass_ssim", "ssim")

    def __init__(self, path: Path, weights: dict[str, float], append: bool, after_step: int = 0):
        """``append``: a resumed run continues the log from ``after_step``, its state's step; rows past it were
        written by the interrupted run after its last saved state, are done again, and are dropped."""
        self.fields = ["step", "d_loss", *[t.name for t in terms.TERMS if weights.get(t.name)], "grad_norm", "noise_weight",
                       *self.VALIDATION]
        fresh = not (append and path.exists())
        path.parent.mkdir(parents=True, exist_ok=True)
        if not fresh:
            with open(path, newline="") as f:
                kept = [row for row in csv.DictReader(f) if int(row["step"]) <= after_step]
            with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(kept)
        self._file = open(path, "w" if fresh else "a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=self.fields, extrasaction="ignore")
        if fresh:
            self._writer.writeheader()

    def write(self, row: dict) -> None:
        self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def train(cfg: RealismConfig, stop: threading.Event | None = None) -> dict:
    """Train as ``cfg`` says; ``stop`` (set by SIGINT/SIGTERM in the CLI) ends the run after the current step, with
    the resumable state saved, so `--resume` continues exactly where it stopped."""
    check(cfg)
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    spec = task(cfg.task)
    val, train_samples = held_out_by_folder(cfg.data, cfg.val_fraction, read_triptych_folder)
    if min(min(t.hq.shape) for t in val + train_samples) < cfg.crop:
        raise ValueError(f"crop {cfg.crop} is larger than the smallest panel in {cfg.data}")
    val = val[:cfg.val_images]
    # (input, HQ, tissue): the tissue mask (eroded label regions) is where speckle statistics are compared
    pairs = [(getattr(t, spec.source), t.hq, tissue_mask(t.hq, t.seg)) for t in train_samples]
    out = Path(cfg.out)
    state_file = state_path(out)

    net = build_generator(cfg)
    disc = PatchDiscriminator(PatchGANConfig(conditional=True))
    needed = terms.needs(cfg.weights)
    texture = RandomFilterTexture() if terms.FILTERS in needed else None
    net, disc = net.to(device), disc.to(device)
    texture = texture.to(device) if texture is not None else None
    opt_g = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.d_lr, betas=(0.5, 0.999))
    train_discriminator = terms.DISCRIMINATOR in needed
    step, best = 0, None
    source = state_file if cfg.resume else Path(cfg.init) if cfg.init and _is_state(cfg.init) else None
    if cfg.init and source is None:
        _initialise(net, cfg)
    if source is not None:  # this run resumed, or another run's state continued as a new stage
        if not source.exists():
            raise FileNotFoundError(f"nothing to resume: {source} does not exist")
        state = torch.load(source, map_location=device, weights_only=True)
        net.load_state_dict(state["generator"])
        disc.load_state_dict(state["discriminator"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        step = state["step"]
        if cfg.resume:
            best = state["best"]
        else:  # a new stage: its own best, its own learning rates (the optimisers' moments carry over)
            for opt, lr in ((opt_g, cfg.lr), (opt_d, cfg.d_lr)):
                for group in opt.param_groups:
                    group["lr"] = lr
        log.info("%s %s at step %d", "resumed from" if cfg.resume else "continuing", source, step)
    meta_base = {"task": cfg.task, "training": terms.describe(cfg.weights),
                 "training_data": f"{len(train_samples)} triptychs from {cfg.data}",
                 "config": asdict(cfg), "command": command_line()}

    def checkpoint_state() -> dict:
        """Everything a resume needs: both nets, both optimisers, the step and the best score so far."""
        return {"format": STATE_FORMAT, "step": step, "best": best, "generator": net.state_dict(),
                "discriminator": disc.state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                "config": asdict(cfg)}

    log_file = TrainingLog(out.with_name(out.stem + ".log.csv"), cfg.weights, append=cfg.resume, after_step=step)
    net.train()
    t0 = time.monotonic()
    last: dict = {}
    bar = tqdm(total=cfg.steps, initial=step, desc=f"realism {cfg.arch}", unit="step",
               disable=None if cfg.progress else True)
    try:
        while step < cfg.steps and not (stop is not None and stop.is_set()):
            rng, gen = step_generators(cfg.seed, step)
            # y is x's HQ, aligned; the discriminator sees the input beside each image
            x, y, tissue = random_crops(pairs, cfg.batch, cfg.crop, rng)
            noise = [n.to(device) for n in net.make_noise(x, gen)]  # drawn on the CPU: the same on every device
            x, y, tissue = x.to(device), y.to(device), tissue.to(device)
            fake = net(x, noise)
            row = {"step": step + 1}
            if train_discriminator:
                d_loss = lsgan_discriminator_loss(disc(y, x), disc(fake.detach(), x))
                row["d_loss"] = optimise(opt_d, d_loss)
            batch = terms.Batch(fake, x, y, tissue, lambda: disc(fake, x), texture, cfg.correlation_lags)
            g_loss, parts = terms.total(cfg.weights, batch)
            row["grad_norm"] = _step(opt_g, g_loss, net, cfg.max_grad_norm)
            step += 1
            row.update({k: v.item() for k, v in parts.items()}, noise_weight=_noise_weight(net))
            bar.update(1)
            bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k != "step"})
            if val and (step % cfg.val_every == 0 or step == cfg.steps):
                report = validate(net, val, spec.source, cfg.seed, C2STBudget(steps=cfg.val_c2st_steps, repeats=1),
                                  device)
                score = realism_score(report)
                row.update(score=score, c2st=report["c2st"], nakagami_m=report["output"]["nakagami_m"],
                           fwhm_axial=report["output"]["fwhm_axial_px"],
                           fwhm_lateral=report["output"]["fwhm_lateral_px"], lowpass_ssim=report["lowpass_ssim"],
                           ssim=report["ssim"])
                log.info("step %d: realism score %.3f %s", step, score, {k: round(v, 3) for k, v in row.items()
                                                                        if isinstance(v, float)})
                if best is None or score < best:
                    best = score
                    save_checkpoint(out, net, {**meta_base, "steps": step, "validation": report,
                                               "realism_score": score})
                save_state(state_file, checkpoint_state())
            log_file.write(row)
            last = row
    finally:
        bar.close()
        log_file.close()
    if not out.exists():  # no validation split: the last generator is the model
        save_checkpoint(out, net, {**meta_base, "steps": step})
    save_state(state_file, checkpoint_state())
    return {"steps": step, "best_score": best, "seconds": time.monotonic() - t0, "out": str(out),
            "state": str(state_file), "last": last, "interrupted": step < cfg.steps}
