"""`usnst train TRAINER`: one subcommand per trainer, each with only its own options — realism (no pretrained
weights; the shipped models' trainer), perceptual (the thesis' VGG19 losses), supervised (L1), distill (the CPU
real-time net from a teacher). Options left unset take the trainer's config defaults (trainer.realism.RealismConfig,
trainer.perceptual.TrainConfig, trainer.supervised.SupervisedConfig, trainer.distill.DistillConfig); an option that
cannot apply to the run is refused with the reason, never ignored."""
from __future__ import annotations

import argparse
import os

from usnst import flags


def _run_flags(p, cfg, out_help: str = "checkpoint file to write") -> None:
    """What every trainer takes: the data, where the model goes, the step budget, crops, rate, seed and threads."""
    p.add_argument("--data", required=True, help="folder of LQ | HQ | seg triptychs (usnst phantom writes them); "
                   "several, comma-separated, train on all (each folder's first share held out for validation)")
    if hasattr(cfg, "out"):
        p.add_argument("--out", default=None, help=f"{out_help} (default {cfg.out})")
    p.add_argument("--steps", type=flags.positive_int, default=None, help=f"training steps (default {cfg.steps})")
    p.add_argument("--batch", type=flags.ranged(int, 1, 4096), default=None, help=f"crops per step (default {cfg.batch})")
    p.add_argument("--crop", type=flags.side, default=None, help=f"crop side in pixels (default {cfg.crop})")
    p.add_argument("--lr", type=flags.positive_float, default=None, help=f"learning rate (default {cfg.lr:g})")
    p.add_argument("--seed", type=flags.seed, default=None, help=f"seed of crops, noise and initial weights (default {cfg.seed})")
    p.add_argument("--threads", type=flags.threads, default=None, help="CPU threads (default: the runtime's)")


def _loss_weights(text: str) -> dict[str, float]:
    """'TERM=WEIGHT,TERM=WEIGHT' → {TERM: WEIGHT, …}: the terms listed, every other term off."""
    from usnst.trainer.terms import BY_NAME

    weights = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in BY_NAME:
            raise argparse.ArgumentTypeError(f"expected TERM=WEIGHT,… with TERM one of {', '.join(BY_NAME)}; got {item!r}")
        weights[name] = flags.non_negative_float(value.strip())
    if not weights:
        raise argparse.ArgumentTypeError("expected at least one TERM=WEIGHT")
    return weights


_loss_weights.mapping = True  # a TOML table (`[loss]`) in a --config file is accepted as TERM=WEIGHT,…


# -- realism --------------------------------------------------------------------------------------------
def realism_flags(p) -> None:
    from usnst.offline.tasks import TASKS
    from usnst.trainer.realism import ARCHS, RealismConfig
    from usnst.trainer.terms import TERMS

    d = RealismConfig(data="")
    _run_flags(p, d)
    p.add_argument("--task", default=None, choices=[name for name, t in TASKS.items() if t.paired],
                   help=f"a task with an HQ panel of the same scene (default {d.task}); a clinical look is fitted from "
                        f"real frames by `usnst scanner-texture`")
    p.add_argument("--arch", default=None, choices=ARCHS, help=f"the CPU real-time net or the Johnson net (default {d.arch})")
    p.add_argument("--channels", type=flags.ranged(int, 1, 512), default=None, help=f"fast: channels (default {d.channels})")
    p.add_argument("--blocks", type=flags.ranged(int, 0, 64), default=None, help=f"fast: separable blocks (default {d.blocks})")
    p.add_argument("--width", type=flags.ranged(int, 1, 128), default=None, help=f"johnson: channels of the first conv (default {d.width})")
    p.add_argument("--n-residual", type=flags.ranged(int, 0, 16), default=None, help=f"johnson: residual blocks (default {d.n_residual})")
    p.add_argument("--skip-kernel", type=flags.ranged(int, 0, 31), default=None,
                   help="johnson: pass the input skip through a learned k×k filter (odd k; starts as the identity, so "
                        "--init from a net without one continues where it was)")
    terms_help = "; ".join(f"{t.name} ({t.weight:g}): {t.why}" for t in TERMS)
    p.add_argument("--loss", type=_loss_weights, default=None, metavar="TERM=WEIGHT,…",
                   help=f"the generator's loss: the terms listed with their weights, every other term off. Terms "
                        f"(default weight): {terms_help}")
    p.add_argument("--correlation-lags", type=flags.ranged(int, 1, 16), default=None,
                   help=f"the correlation term's largest lag (default {d.correlation_lags})")
    p.add_argument("--d-lr", type=flags.positive_float, default=None, help=f"the discriminator's learning rate (default {d.d_lr:g})")
    p.add_argument("--max-grad-norm", type=flags.non_negative_float, default=None,
                   help="scale the generator's gradient down to at most this L2 norm (the log's grad_norm column shows "
                        "the usual size): one outsized batch then cannot throw Adam off (default 0: never)")
    p.add_argument("--val-every", type=flags.positive_int, default=None,
                   help=f"steps between validations; the best validated weights are kept (default {d.val_every})")
    p.add_argument("--val-images", type=flags.positive_int, default=None,
                   help=f"held-out frames in each validation (default {d.val_images})")
    p.add_argument("--val-c2st-steps", type=flags.positive_int, default=None,
                   help=f"training steps of the validation's C2ST classifier (default {d.val_c2st_steps})")
    p.add_argument("--init", default=None, help="start from this checkpoint's weights (same architecture), fresh optimisers")
    p.add_argument("--resume", action="store_true", help="continue this run from its state (OUT.state.pt)")
    p.add_argument("--device", default=None, help=f"cpu or cuda[:N] (default {d.device})")
    p.set_defaults(func=run_realism)


REALISM_OPTIONS = ("out", "steps", "batch", "crop", "lr", "seed", "threads", "task", "arch", "channels", "blocks",
                   "width", "n_residual", "skip_kernel", "correlation_lags", "d_lr", "max_grad_norm", "val_every", "val_images",
                   "val_c2st_steps", "init", "device")


def realism_config(args):
    """The run the options describe; options that belong to the other architecture, or to a term the loss leaves
    off, are refused rather than ignored."""
    from usnst.trainer import terms
    from usnst.trainer.realism import ARCH_OPTIONS, RealismConfig

    cfg = RealismConfig(data=args.data, progress=not args.quiet, resume=args.resume, **flags.given(args, REALISM_OPTIONS))
    if args.loss is not None:
        cfg.weights = {name: args.loss.get(name, 0.0) for name in cfg.weights}
    for arch, names in ARCH_OPTIONS.items():
        if arch != cfg.arch:
            given = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) is not None]
            if given:
                raise ValueError(f"{', '.join(given)} shape the {arch} net; this run builds --arch {cfg.arch}")
    off = terms.settings_off(cfg.weights, {n for n in REALISM_OPTIONS if getattr(args, n, None) is not None})
    if off:
        raise ValueError(f"--{off[0].replace('_', '-')} sets a loss term that --loss leaves off")
    return cfg


def run_realism(args) -> int:
    from usnst.trainer.realism import train

    cfg = realism_config(args)
    r = train(cfg, flags.stop_on_signals())
    last = r["last"]
    if r["interrupted"]:  # exit 130 as every interrupted command does: a recipe must not count the run finished
        print(f"usnst train: stopped by a signal after step {r['steps']} of {cfg.steps}; state saved to "
              f"{r['state']}: run the same command with --resume to continue")
        return 130
    print(f"usnst train: realism {cfg.arch}, {r['steps']} steps in {r['seconds']:.0f} s; best realism score "
          f"{r['best_score']}; model {r['out']}, resumable state {r['state']}")
    if "c2st" in last:
        print(f"  last validation: C2ST {last['c2st']:.3f}, Nakagami m {last['nakagami_m']:.3f}, speckle FWHM "
              f"{last['fwhm_axial']:.2f}/{last['fwhm_lateral']:.2f} px, low-passed SSIM {last['lowpass_ssim']:.3f}, "
              f"SSIM {last['ssim']:.3f}")
    return 0


# -- perceptual -----------------------------------------------------------------------------------------
def perceptual_flags(p) -> None:
    from usnst.offline.tasks import TASKS
    from usnst.trainer.perceptual import TrainConfig

    d = TrainConfig(data="")
    _run_flags(p, d)
    p.add_argument("--out-dir", default=None, help=f"run folder: best.pt, final.pt, last_state.pt, logs (default {d.out_dir})")
    p.add_argument("--task", default=None, choices=list(TASKS), help=f"default {d.task}")
    p.add_argument("--style", default=None, help="style image or folder (average style; default: the HQ panels)")
    p.add_argument("--size", type=flags.side, default=None, help="resize the crop to this side (CPU runs)")
    p.add_argument("--content-weight", type=flags.non_negative_float, default=None, help="default: the task's thesis weight")
    p.add_argument("--style-weight", type=flags.non_negative_float, default=None, help="default: the task's thesis weight")
    p.add_argument("--pixel-weight", type=flags.non_negative_float, default=None, help="L1 to HQ (off in the thesis)")
    p.add_argument("--ssim-weight", type=flags.non_negative_float, default=None, help="1 − SSIM to HQ (off in the thesis)")
    p.add_argument("--width", type=flags.ranged(int, 1, 128), default=None, help=f"channels of the first conv (default {d.width}, the thesis')")
    p.add_argument("--n-residual", type=flags.ranged(int, 0, 16), default=None, help=f"default {d.n_residual}")
    p.add_argument("--no-noise", action="store_true", help="build the net without noise injection")
    p.add_argument("--val-every", type=flags.positive_int, default=None, help=f"default {d.val_every}")
    p.add_argument("--ckpt-every", type=flags.positive_int, default=None, help=f"steps between resumable states (default {d.ckpt_every})")
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last_state.pt")
    p.add_argument("--vgg-weights", default=None, help="torchvision VGG19 state dict, or 'random' (tests only)")
    p.add_argument("--inception-weights", default=None, help="hq2clinical validation FID")
    p.add_argument("--device", default=None, help="cpu or cuda[:N]")
    p.add_argument("--no-amp", action="store_true", help="cuda: no bf16 autocast")
    p.add_argument("--deterministic", action="store_true", help="deterministic kernels (slower)")
    p.set_defaults(func=run_perceptual)


def perceptual_config(args):
    from usnst.trainer.perceptual import TrainConfig

    if args.no_amp and not str(args.device or "cpu").startswith("cuda"):
        raise ValueError("--no-amp turns off bf16 autocast, which runs only with --device cuda")
    return TrainConfig(data=args.data, noise=not args.no_noise, amp=not args.no_amp, deterministic=args.deterministic,
                       resume=args.resume, progress=not args.quiet,
                       **flags.given(args, ["out_dir", "task", "style", "steps", "batch", "crop", "size", "lr",
                                            "content_weight", "style_weight", "pixel_weight", "ssim_weight", "width",
                                            "n_residual", "val_every", "ckpt_every", "vgg_weights", "inception_weights",
                                            "seed", "device", "threads"]))


def run_perceptual(args) -> int:
    from usnst.trainer.perceptual import train

    cfg = perceptual_config(args)
    r = train(cfg, flags.stop_on_signals())
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun, rank 0 reports for all
    if r["interrupted"]:
        print(f"usnst train: stopped by a signal after step {r['steps']} of {cfg.steps}; state saved to {r['state']}: "
              "run the same command with --resume to continue")
        return 130
    print(f"usnst train: {cfg.task}, {r['steps']} steps, loss {r['first_loss']:.4g} -> {r['last_loss']:.4g}, "
          f"{r['images_per_s']:.2f} images/s; checkpoints in {r['out_dir']} (best.pt, final.pt, last_state.pt)")
    v = r.get("validation") or {}
    if "ssim" in v:
        print(_held_out_line(v))
    elif "fid" in v:
        print(f"  held-out: FID to the style set {v['fid']:.2f}")
    return 0


# -- supervised -----------------------------------------------------------------------------------------
def supervised_flags(p) -> None:
    from usnst.trainer.supervised import SupervisedConfig

    d = SupervisedConfig(data="")
    _run_flags(p, d)
    p.add_argument("--width", type=flags.ranged(int, 1, 128), default=None, help=f"channels of the first conv (default {d.width})")
    p.add_argument("--n-residual", type=flags.ranged(int, 0, 16), default=None, help=f"default {d.n_residual}")
    p.add_argument("--no-noise", action="store_true", help="build the net without noise injection")
    p.set_defaults(func=run_supervised)


def supervised_config(args):
    from usnst.trainer.supervised import SupervisedConfig

    return SupervisedConfig(data=args.data, progress=not args.quiet, noise=not args.no_noise, **flags.given(
        args, ["out", "steps", "batch", "crop", "lr", "width", "n_residual", "seed", "threads"]))


def run_supervised(args) -> int:
    from usnst.trainer.supervised import train

    cfg = supervised_config(args)
    meta = train(cfg)
    print(f"usnst train: saved {cfg.out} after {meta['steps']} steps ({meta['train_seconds']:.0f} s); L1 "
          f"{meta['first_l1']:.4f} -> {meta['final_l1']:.4f}")
    if meta["validation"]:
        print(_held_out_line(meta["validation"]))
    return 0


# -- distill --------------------------------------------------------------------------------------------
def distill_flags(p) -> None:
    from usnst.trainer.distill import DistillConfig

    d = DistillConfig(data="")
    _run_flags(p, d)
    p.add_argument("--teacher", default=None, help="teacher checkpoint (default: the embedded model)")
    p.add_argument("--channels", type=flags.ranged(int, 1, 512), default=None, help=f"the student's channels (default {d.channels})")
    p.add_argument("--blocks", type=flags.ranged(int, 0, 64), default=None, help=f"the student's blocks (default {d.blocks})")
    p.add_argument("--no-noise", action="store_true",
                   help="a student without a noise plane (default: one when the teacher takes noise)")
    p.set_defaults(func=run_distill)


def distill_config(args):
    from usnst.trainer.distill import DistillConfig

    return DistillConfig(data=args.data, progress=not args.quiet, noise=False if args.no_noise else None,
                         **flags.given(args, ["teacher", "out", "steps", "batch", "crop", "lr", "channels", "blocks",
                                              "seed", "threads"]))


def run_distill(args) -> int:
    from usnst.trainer.distill import distill

    cfg = distill_config(args)
    meta = distill(cfg)
    v = meta["validation"]
    print(f"usnst train: distilled {cfg.out} from {meta['teacher']} in {meta['train_seconds']:.0f} s; L1 to teacher "
          f"{meta['first_l1']:.4f} -> {meta['final_l1']:.4f}")
    if v:
        print(f"  held-out SSIM vs HQ: student {v['student_ssim']:.3f}, teacher {v['teacher_ssim']:.3f}, "
              f"identity {v['identity_ssim']:.3f}")
    return 0


def _held_out_line(v: dict) -> str:
    return (f"  held-out: SSIM {v['ssim']:.3f} (identity {v['identity_ssim']:.3f}), "
            f"PSNR {v['psnr']:.2f} dB (identity {v['identity_psnr']:.2f} dB)")


# name → (help line, function adding its options, function turning them into the trainer's config)
TRAINERS = {
    "realism": ("no pretrained weights: low-passed anatomy, PatchGAN and speckle statistics (the shipped models)",
                realism_flags, realism_config),
    "perceptual": ("the thesis' perceptual loss: VGG19 content + style (needs ImageNet weights)", perceptual_flags,
                   perceptual_config),
    "supervised": ("L1 to HQ: the conditional median, a baseline", supervised_flags, supervised_config),
    "distill": ("the CPU real-time net reproduces a teacher (the same noise fed to both)", distill_flags,
                distill_config),
}


def train_flags(p) -> None:
    trainers = p.add_subparsers(dest="trainer", required=True, metavar="TRAINER")
    p.trainers = {}
    for name, (help_line, add_flags, _) in TRAINERS.items():
        sub = trainers.add_parser(name, help=help_line, description=help_line, formatter_class=p.formatter_class)
        flags.add_log_flags(sub)
        add_flags(sub)
        flags.add_config_flag(sub)
        p.trainers[name] = sub


# -- recipe ---------------------------------------------------------------------------------------------
def recipe_flags(p) -> None:
    p.add_argument("recipe", help="a recipe file, e.g. recipes/lq2hq.toml (each shipped model has one)")
    p.add_argument("--work", required=True, help="folder the recipe runs in: phantoms, every stage, the model")
    p.set_defaults(func=run_recipe)


def run_recipe(args) -> int:
    """Rebuild a model from nothing: every step of its recipe, timed; an interrupted run resumes where it stopped."""
    from usnst.recipe import run

    report = run(args.recipe, args.work, say=lambda line: flags.say(args, f"usnst recipe: {line}"))
    times = ", ".join(f"{t['run']} {t['seconds']:.0f} s" for t in report["steps"] if t["seconds"] is not None)
    flags.say(args, f"usnst recipe: {report['model']} in {report['seconds']:.0f} s ({times}); timings in "
              f"{args.work}/recipe.json")
    return 0


COMMANDS = {"train": ("train a transform net: realism, perceptual (thesis), supervised or distill", train_flags),
            "recipe": ("rebuild a model from nothing by its recipe (recipes/NAME.toml): phantoms, training, stage",
                       recipe_flags)}
