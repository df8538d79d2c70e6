"""`usnst train`: perceptual-loss training (thesis), supervised L1, or distillation into the CPU real-time net.
Flags left unset take each trainer's own config defaults (trainer.perceptual.TrainConfig, trainer.supervised.
SupervisedConfig, trainer.distill.DistillConfig) and the task table (offline.tasks)."""
from __future__ import annotations

import argparse
import os

from usnst import flags

LOSSES = ("perceptual", "l1", "distill", "realism")


def train_flags(p) -> None:
    from usnst.offline.tasks import TASKS

    p.add_argument("--data", required=True, help="folder of LQ | HQ | seg triptychs (usnst phantom writes them)")
    p.add_argument("--loss", default=LOSSES[0], choices=LOSSES,
                   help="perceptual: VGG19 content+style (thesis, needs ImageNet weights); l1: supervised; distill: the CPU "
                        "real-time net reproduces --teacher; realism: low-pass anatomy + PatchGAN (+ random-filter "
                        "texture), no pretrained weights")
    g = p.add_argument_group("realism (--loss realism; defaults in trainer.realism.RealismConfig)")
    g.add_argument("--arch", default=None, choices=["fast", "johnson"], help="the CPU real-time net or the Johnson net")
    g.add_argument("--speckle", action="store_true", default=None,
                   help="fast net with a speckle head: Rayleigh speckle from PSF-blurred complex noise on a base image")
    g.add_argument("--speckle-psf", choices=["free", "gaussian"], default=None,
                   help="speckle head's PSF: any 7x7 kernel (free) or a Gaussian with learned axial/lateral widths")
    g.add_argument("--base-weight", type=flags.non_negative_float, default=None,
                   help="speckle head: squared error of the base (mean grey) image to HQ")
    g.add_argument("--base-sigma", type=flags.ranged(float, 0, 64), default=None,
                   help="speckle head: compare the base with HQ low-passed by this sigma (px), i.e. without HQ's speckle")
    g.add_argument("--anatomy-weight", type=flags.non_negative_float, default=None, help="L1 between low-passed output and HQ")
    g.add_argument("--adversarial-weight", type=flags.non_negative_float, default=None, help="conditional PatchGAN (LSGAN)")
    g.add_argument("--texture-weight", type=flags.non_negative_float, default=None, help="random-filter Gram texture, per tile")
    g.add_argument("--histogram-weight", type=flags.non_negative_float, default=None, help="envelope-power distribution vs HQ (sorted L1; its bright tail sets Nakagami m)")
    g.add_argument("--nakagami-weight", type=flags.non_negative_float, default=None, help="speckle shape: block Nakagami m vs HQ")
    g.add_argument("--local-histogram-weight", type=flags.non_negative_float, default=None,
                   help="speckle shape: mean-removed histogram of each 16x16 tissue block vs HQ")
    g.add_argument("--correlation-weight", type=flags.non_negative_float, default=None,
                   help="speckle grain: autocorrelation at lags 1-N vs HQ (N: --correlation-lags)")
    g.add_argument("--correlation-lags", type=flags.ranged(int, 1, 64), default=None, help="largest lag of the autocorrelation term")
    g.add_argument("--correlation-window", type=flags.ranged(int, 4, 1024), default=None,
                   help="compare the autocorrelation in NxN tiles (grain that changes with depth), not whole crops")
    g.add_argument("--brightness-weight", type=flags.non_negative_float, default=None,
                   help="mean grey of each 16x16 tissue block vs HQ (the low-passed L1 aims at a median)")
    g.add_argument("--phase-weight", type=flags.non_negative_float, default=None,
                   help="fine texture alike at every pixel phase mod 4: no pixel-shuffle grid (no target needed)")
    g.add_argument("--tissue-d-weight", type=flags.non_negative_float, default=None,
                   help="a second, unconditional PatchGAN that scores only patches lying wholly in tissue (texture)")
    g.add_argument("--tissue-d-normalise", action=argparse.BooleanOptionalAction, default=None,
                   help="show the tissue discriminator the grain alone: local mean removed, local contrast divided out")
    g.add_argument("--tissue-d-spectral-norm", action=argparse.BooleanOptionalAction, default=None,
                   help="spectral norm on the tissue discriminator (default: as --d-spectral-norm)")
    g.add_argument("--spectrum-weight", type=flags.non_negative_float, default=None,
                   help="texture power spectrum in 16x16 tissue tiles vs HQ's (log ratio, every frequency alike)")
    g.add_argument("--patch-distribution-weight", type=flags.non_negative_float, default=None,
                   help="joint distribution of the locally normalised grain's 5x5 neighbourhoods in tissue vs HQ's "
                        "(sliced Wasserstein): what a patch classifier judges, beyond averaged statistics")
    g.add_argument("--grain-histogram-weight", type=flags.non_negative_float, default=None,
                   help="grey-level distribution of the locally normalised fine texture in tissue vs HQ's: log "
                        "compression's sharp dark pits and broad bright grains (skew), which spectra cannot see")
    g.add_argument("--init", default=None, help="start the generator from this checkpoint (same architecture)")
    g.add_argument("--d-lr", type=flags.positive_float, default=None, help="discriminator learning rate")
    g.add_argument("--d-spectral-norm", action=argparse.BooleanOptionalAction, default=None,
                   help="spectral norm on the discriminator (default on; off: it keeps learning, a stronger teacher)")
    g.add_argument("--val-images", type=flags.positive_int, default=None, help="held-out frames in each realism report")
    g.add_argument("--ema", type=flags.ranged(float, 0, 1, above=True), default=None,
                   help="validate and save an exponential moving average of the generator's weights with this decay "
                        "(e.g. 0.999): a GAN's generator oscillates from step to step, its average much less")
    g.add_argument("--val-c2st-steps", type=flags.positive_int, default=None,
                   help="training steps of the validation's C2ST classifier (default 1000; the test tables use 3 x 2000)")
    g.add_argument("--resume-from", default=None,
                   help="another run's STATE.pt: continue its generator, discriminator and optimisers as a new stage "
                        "under this run's loss weights and --out")
    p.add_argument("--teacher", default=None, help="distill: teacher checkpoint (default: the embedded model)")
    p.add_argument("--channels", type=flags.ranged(int, 1, 512), default=None, help="distill: channels of the real-time net")
    p.add_argument("--blocks", type=flags.ranged(int, 0, 64), default=None, help="distill: separable blocks of the real-time net")
    p.add_argument("--task", default=None, choices=list(TASKS), help="perceptual: which task")
    p.add_argument("--style", default=None, help="perceptual: style image or folder (average style; default the HQ panels); realism, unpaired tasks: the target-domain images (e.g. `usnst clean` output)")
    p.add_argument("--out-dir", default=None, help="perceptual: run folder (default runs/train)")
    p.add_argument("--out", default=None, help="l1/distill: checkpoint file")
    p.add_argument("--steps", type=flags.positive_int, default=None)
    p.add_argument("--batch", type=flags.ranged(int, 1, 4096), default=None)
    p.add_argument("--crop", type=flags.side, default=None, help="perceptual: centre crop (thesis 1000); l1/distill: random crop")
    p.add_argument("--size", type=flags.side, default=None, help="perceptual: resize the crop to this side (CPU runs)")
    p.add_argument("--lr", type=flags.positive_float, default=None, help="default: 1e-5 perceptual (thesis), 2e-3 l1/distill")
    p.add_argument("--content-weight", type=flags.non_negative_float, default=None, help="default: the task's thesis weight")
    p.add_argument("--style-weight", type=flags.non_negative_float, default=None, help="default: the task's thesis weight")
    p.add_argument("--pixel-weight", type=flags.non_negative_float, default=None,
                   help="perceptual/realism: full-resolution L1 to HQ (off in the thesis)")
    p.add_argument("--beam-speckle", action="store_true", default=None,
                   help="realism: fit the beam-speckle stage to the HQ panels and train the net as its base: the "
                        "losses judge the net's output low-passed plus the stage's grain, as the engine will show it")
    p.add_argument("--mse-weight", type=flags.non_negative_float, default=None,
                   help="realism: full-resolution squared error to HQ (the conditional mean; with `usnst phantom "
                        "--independent-hq` data, the base net under `usnst speckle`)")
    p.add_argument("--ssim-weight", type=flags.non_negative_float, default=None, help="perceptual: extra 1-SSIM to HQ (off in the thesis)")
    p.add_argument("--width", type=flags.ranged(int, 1, 128), default=None, help="channels of the first conv (thesis: 32)")
    p.add_argument("--n-residual", type=flags.ranged(int, 0, 16), default=None)
    p.add_argument("--skip-kernel", type=flags.ranged(int, 0, 31), default=None,
                   help="realism, johnson: pass the input skip through a learned k×k filter (odd k; starts as the "
                        "identity, so --init from a net without one continues where it was)")
    p.add_argument("--no-noise", action="store_true",
                   help="build the net without noise injection (distill: default, a noise plane when the teacher has one)")
    p.add_argument("--val-every", type=flags.positive_int, default=None)
    p.add_argument("--ckpt-every", type=flags.positive_int, default=None)
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last_state.pt")
    p.add_argument("--vgg-weights", default=None)
    p.add_argument("--inception-weights", default=None, help="hq2clinical validation FID")
    p.add_argument("--device", default=None, help="cpu (default) or cuda")
    p.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    p.add_argument("--deterministic", action="store_true")
    p.add_argument("--seed", type=flags.seed, default=None)
    p.add_argument("--threads", type=flags.threads, default=None)
    p.set_defaults(func=run_train)


def _held_out_line(v: dict) -> str:
    return (f"  held-out: SSIM {v['ssim']:.3f} (identity {v['identity_ssim']:.3f}), "
            f"PSNR {v['psnr']:.2f} dB (identity {v['identity_psnr']:.2f} dB)")


def run_train(args) -> int:
    if args.loss == "distill":
        from usnst.trainer.distill import DistillConfig, distill

        cfg = DistillConfig(data=args.data, progress=not args.quiet, noise=False if args.no_noise else None, **flags.given(
            args, ["teacher", "out", "steps", "batch", "crop", "lr", "channels", "blocks", "seed", "threads"]))
        meta = distill(cfg)
        v = meta["validation"]
        print(f"usnst train: distilled {cfg.out} from {meta['teacher']} in {meta['train_seconds']:.0f} s; L1 to teacher "
              f"{meta['first_l1']:.4f} -> {meta['final_l1']:.4f}")
        if v:
            print(f"  held-out SSIM vs HQ: student {v['student_ssim']:.3f}, teacher {v['teacher_ssim']:.3f}, "
                  f"identity {v['identity_ssim']:.3f}")
        return 0
    if args.loss == "realism":
        from usnst.trainer.realism import RealismConfig
        from usnst.trainer.realism import train as train_realism

        cfg = RealismConfig(data=args.data, progress=not args.quiet, resume=args.resume, **flags.given(
            args, ["out", "task", "arch", "speckle", "speckle_psf", "base_weight", "base_sigma", "channels", "blocks", "width", "n_residual", "skip_kernel", "steps", "batch", "crop", "lr",
                   "d_lr", "anatomy_weight", "pixel_weight", "mse_weight", "beam_speckle", "adversarial_weight", "texture_weight", "histogram_weight",
                   "nakagami_weight", "local_histogram_weight", "correlation_weight", "correlation_lags",
                   "correlation_window", "brightness_weight", "phase_weight", "spectrum_weight",
                   "patch_distribution_weight", "grain_histogram_weight", "tissue_d_weight", "tissue_d_normalise",
                   "tissue_d_spectral_norm", "d_spectral_norm", "val_every", "val_images", "val_c2st_steps", "ema",
                   "resume_from", "style", "init", "seed", "threads"]))
        r = train_realism(cfg, flags.stop_on_signals())
        last = r["last"]
        if r["interrupted"]:
            print(f"usnst train: stopped by a signal after step {r['steps']} of {cfg.steps}; state saved to "
                  f"{r['state']}: run the same command with --resume to continue")
        print(f"usnst train: realism {cfg.arch}, {r['steps']} steps in {r['seconds']:.0f} s; best realism score "
              f"{r['best_score']}; model {r['out']}, resumable state {r['state']}")
        if "c2st" in last:
            print(f"  last validation: C2ST {last['c2st']:.3f}, Nakagami m {last['nakagami_m']:.3f}, speckle FWHM "
                  f"{last['fwhm_axial']:.2f}/{last['fwhm_lateral']:.2f} px, low-passed SSIM {last['lowpass_ssim']:.3f}, "
                  f"SSIM {last['ssim']:.3f}")
        return 0
    if args.loss == "l1":
        from usnst.trainer.supervised import SupervisedConfig, train

        cfg = SupervisedConfig(data=args.data, progress=not args.quiet, noise=not args.no_noise, **flags.given(
            args, ["out", "steps", "batch", "crop", "lr", "width", "n_residual", "seed", "threads"]))
        meta = train(cfg)
        print(f"usnst train: saved {cfg.out} after {meta['steps']} steps ({meta['train_seconds']:.0f} s); L1 "
              f"{meta['first_l1']:.4f} -> {meta['final_l1']:.4f}")
        if meta["validation"]:
            print(_held_out_line(meta["validation"]))
        return 0
    from usnst.trainer.perceptual import TrainConfig, train

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cfg = TrainConfig(data=args.data, noise=not args.no_noise, amp=not args.no_amp, deterministic=args.deterministic,
                      resume=args.resume, progress=not args.quiet,
                      **flags.given(args, ["out_dir", "task", "style", "steps", "batch", "crop", "size", "lr",
                                           "content_weight", "style_weight", "pixel_weight", "ssim_weight", "width",
                                           "n_residual", "val_every", "ckpt_every", "vgg_weights", "inception_weights",
                                           "seed", "device"]))
    r = train(cfg, flags.stop_on_signals())
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun, rank 0 reports for all
    if r["interrupted"]:
        print(f"usnst train: stopped by a signal after step {r['steps']} of {cfg.steps}; state saved to {r['state']}: "
              "run the same command with --resume to continue")
        return 0
    print(f"usnst train: {cfg.task}, {r['steps']} steps, loss {r['first_loss']:.4g} -> {r['last_loss']:.4g}, "
          f"{r['images_per_s']:.2f} images/s; checkpoints in {r['out_dir']} (best.pt, final.pt, last_state.pt)")
    v = r.get("validation") or {}
    if "ssim" in v:
        print(_held_out_line(v))
    elif "fid" in v:
        print(f"  held-out: FID to the style set {v['fid']:.2f}")
    return 0


COMMANDS = {"train": ("train a transform net: perceptual loss (thesis), supervised L1, or distillation", train_flags)}
