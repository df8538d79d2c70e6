"""Offline subcommands: phantom (synthetic data), nst (optimisation reference), stylize (batch), metrics, clean.
Each parser sits beside the function that runs it; choices and defaults come from the jobs' dataclasses and the
task table."""
from __future__ import annotations

import sys
from pathlib import Path

from usnst import flags


# -- phantom --------------------------------------------------------------------------------------------
def phantom_flags(p) -> None:
    from usnst_stream.phantom import PROBES, SETTINGS, THESIS_PANEL

    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("-n", "--frames", dest="n", type=flags.positive_int, default=10, help="number of samples")
    p.add_argument("--size", type=flags.size, default=THESIS_PANEL,
                   help="panel size N or HxW (default {}x{}, the thesis')".format(*THESIS_PANEL))
    p.add_argument("--seed", type=flags.seed, default=0)
    p.add_argument("--settings", default=SETTINGS[0], choices=SETTINGS,
                   help="acquisition per scene: the default probe; varied probe geometry, depth, gain, PSF and noise "
                        "(training sets); or outside those ranges (generalisation tests)")
    p.add_argument("--probe", default=None, choices=PROBES,
                   help="probe kind: its usual field of view (default: the phantom's original sector probe, which "
                        "every shipped model was trained on)")
    flags.add_phantom_flags(p)
    p.add_argument("--independent-hq", action="store_true",
                   help="draw the HQ panel's speckle from its own scatterers: a regression target whose speckle LQ "
                        "cannot predict (the base net under `usnst speckle`)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace phantoms the folder holds from other settings (the same command again resumes)")
    p.set_defaults(func=run_phantom)


def run_phantom(args) -> int:
    from tqdm import tqdm

    from usnst_stream.phantom import write_phantoms

    h, w = args.size
    with tqdm(total=args.n, desc="phantoms", unit="img", disable=None) as bar:
        paths = write_phantoms(args.out, args.n, h, w, args.seed, progress=bar.update, settings=args.settings,
                               independent_hq=args.independent_hq, overwrite=args.overwrite, probe_kind=args.probe, formation=args.formation, anatomy=args.anatomy)
    print(f"usnst phantom: wrote {len(paths)} triptychs (LQ | HQ | segmentation, {h}x{w} each) to {args.out}")
    return 0


# -- nst ------------------------------------------------------------------------------------------------
def nst_flags(p) -> None:
    from usnst.offline.nst_config import (
        AVERAGES,
        INITS,
        LOSS_NETWORKS,
        VARIANTS,
        NSTConfig,
        NSTJob,
    )
    from usnst.offline.tasks import TASKS

    job, nst = NSTJob(out=""), NSTConfig()
    p.add_argument("--triptych", help="a thesis LQ | HQ | seg image: content and style follow from --task")
    p.add_argument("--content", help="content image")
    p.add_argument("--style", help="style image")
    p.add_argument("--content-seg", help="segmentation of the content (augmented/local variants)")
    p.add_argument("--style-seg", help="segmentation of the style (augmented variant, paired form)")
    p.add_argument("--style-dir", help="folder of style images: use their average style")
    p.add_argument("--average", default=job.average, choices=AVERAGES, help="how --style-dir is averaged")
    p.add_argument("--variant", default=job.variant, choices=VARIANTS)
    p.add_argument("--task", default=nst.task, choices=list(TASKS), help="sets thesis weights")
    p.add_argument("--content-weight", type=flags.non_negative_float, default=nst.content_weight, help="default: the task's thesis weight")
    p.add_argument("--style-weight", type=flags.non_negative_float, default=nst.style_weight, help="default: the task's thesis weight")
    p.add_argument("--lr", type=flags.positive_float, default=nst.lr, help="Adam step, in grey levels (0-255)")
    p.add_argument("--iterations", type=flags.positive_int, default=nst.iterations)
    p.add_argument("--init", default=nst.init, choices=INITS)
    p.add_argument("--size", type=flags.side, default=job.size, help="resize so the longer side is N (CPU runs: 128-256)")
    p.add_argument("--clear-background", action="store_true", help="zero pixels outside the foreground mask")
    p.add_argument("--loss-network", default=nst.loss_network, choices=LOSS_NETWORKS,
                   help="vgg: the thesis' VGG19 losses (ImageNet weights); random-filters: texture of fixed random "
                        "filter banks + low-passed content, no pretrained weights (plain and --style-dir variants; "
                        "weights default to 1, lr to 1 grey level)")
    p.add_argument("--vgg-weights", default=job.vgg_weights, help="torchvision VGG19 state dict, or 'random' (tests only)")
    p.add_argument("--device", default=job.device, help="torch device for the optimisation, e.g. cuda")
    p.add_argument("--seed", type=flags.seed, default=nst.seed)
    p.add_argument("--out", required=True, help="output PNG (loss curves and report are written beside it)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    flags.add_json_flag(p, "the run's report (also written beside the output as OUT.json)")
    p.set_defaults(func=run_nst)


def run_nst(args) -> int:
    from usnst.offline.nst_config import NSTConfig, NSTJob
    from usnst.offline.nst_job import run_job
    from usnst_io.media import refuse_existing

    refuse_existing(args.out, args.overwrite)

    lr = args.lr
    if args.loss_network == "random-filters" and lr == NSTConfig.lr:
        from usnst.offline.nst_config import TEXTURE_LR

        lr = TEXTURE_LR
    nst = NSTConfig(task=args.task, content_weight=args.content_weight, style_weight=args.style_weight, lr=lr,
                    iterations=args.iterations, init=args.init, seed=args.seed, progress=not args.quiet,
                    loss_network=args.loss_network)
    job = NSTJob(out=args.out, content=args.content, style=args.style, content_seg=args.content_seg,
                 style_seg=args.style_seg, triptych=args.triptych, style_dir=args.style_dir, average=args.average,
                 variant=args.variant, size=args.size, clear_background=args.clear_background,
                 vgg_weights=args.vgg_weights, device=args.device, nst=nst)
    r = run_job(job)
    total, content, style = r["final_loss"] or (float("nan"),) * 3
    flags.say(args, f"usnst nst: {r['variant']} NST, {nst.iterations} iterations in {r['seconds']:.1f} s -> "
              f"{r['output']} (final loss {total:.4g}: content {content:.4g}, style {style:.4g})")
    flags.say(args, f"  loss network: {r['loss_network']}" + (
        f", VGG19 weights {r['vgg_weights']}" if r["vgg_weights"] else " (fixed random filters, no pretrained weights)"))
    if "metrics_vs_hq" in r:
        m = r["metrics_vs_hq"]
        flags.say(args, f"  vs HQ: SSIM {m['ssim']:.3f} (input {m['identity_ssim']:.3f}), PSNR {m['psnr']:.2f} dB "
                  f"(input {m['identity_psnr']:.2f} dB)")
    flags.say(args, f"  loss curves: {Path(r['output']).with_suffix('.losses.csv')}, .losses.png; report: .json")
    flags.emit_json(args, r)
    return 0


# -- stylize --------------------------------------------------------------------------------------------
def stylize_flags(p) -> None:
    from usnst.offline.stylize import DICOM_FORMATS, LAYOUTS, StylizeJob

    job = StylizeJob(inputs="", out="")
    p.add_argument("inputs", help="folder (recursive) or glob pattern, e.g. 'data/**/*.png'")
    p.add_argument("--out", required=True, help="output folder; input folder structure is kept")
    flags.add_engine_flags(p)
    p.add_argument("--layout", default=job.layout, choices=LAYOUTS,
                   help="triptych: stylize LQ, score against HQ; clinical: crop the brightness bar first")
    p.add_argument("--score", action="store_true", help="SSIM/PSNR against paired targets (triptych HQ or --targets)")
    p.add_argument("--targets", default=job.targets, help="folder of targets with the inputs' relative paths")
    p.add_argument("--shard", default="{}/{}".format(*job.shard), help="i/n: process every n-th input starting at i")
    p.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    flags.add_json_flag(p, "the run's summary (counts, failures, mean scores)")
    p.add_argument("--dicom-format", default=job.dicom_format, choices=DICOM_FORMATS,
                   help="DICOM inputs: PNG per frame, or a derived DICOM (de-identified, new UIDs, same geometry "
                        "and frame timing)")
    p.add_argument("--keep-identity", action="store_true",
                   help="derived DICOM: keep the source's patient, study and institution attributes (default: removed "
                        "as DICOM PS3.15's basic de-identification profile says)")
    p.add_argument("--spacing-mm", type=flags.spacing, default=None, metavar="ROW[,COL]",
                   help="mm per pixel of inputs that carry none of their own (PNG frames of one simulator preset): the "
                        "grain keeps a scanner's size in mm, as a DICOM's own spacing or a recording's does (those "
                        "win); refused for a model whose grain has no size in mm")
    p.set_defaults(func=run_stylize)


def run_stylize(args) -> int:
    from usnst.offline.stylize import StylizeJob, parse_shard
    from usnst.offline.stylize import run_stylize as stylize

    engine = flags.open_engine(args)
    job = StylizeJob(inputs=args.inputs, out=args.out, layout=args.layout, targets=args.targets,
                     metrics=args.score or bool(args.targets), shard=parse_shard(args.shard),
                     overwrite=args.overwrite, progress=not args.quiet, dicom_format=args.dicom_format,
                     keep_identity=args.keep_identity, spacing_mm=args.spacing_mm)
    s = stylize(engine, job).summary()
    flags.say(args, f"usnst stylize: {s['inputs']} inputs in this shard: {s['written']} written, {s['skipped_existing']} already "
          f"done, {s['failed']} failed -> {args.out}")
    if "mean_ssim" in s:
        flags.say(args, f"  vs targets: SSIM {s['mean_ssim']:.3f} (input {s['mean_identity_ssim']:.3f}), "
              f"PSNR {s['mean_psnr']:.2f} dB (input {s['mean_identity_psnr']:.2f} dB)")
    for f in s["failures"]:
        flags.say(args, f"  failed: {f['input']}: {f['error']}")
    for note in s["notes"]:
        flags.say(args, f"  note: {note}")
    flags.emit_json(args, s)
    return 1 if s["failed"] else 0


# -- metrics --------------------------------------------------------------------------------------------
def metrics_flags(p) -> None:
    from usnst.offline.evaluate import TARGET_LAYOUTS, MetricsJob

    job = MetricsJob(outputs="", targets="")
    p.add_argument("outputs", help="folder (recursive) or glob of outputs; with --video a sequence (folder, video, "
                                   "DICOM cine, .usrec recording)")
    p.add_argument("--targets", default=None, help="folder of targets with the outputs' relative paths")
    p.add_argument("--video", action="store_true", help="temporal stability (flicker) of a sequence against --input")
    p.add_argument("--input", default=None, help="--video: the input sequence the outputs were stylized from; "
                   "--realism: the folder of input frames (the outputs' relative names), for the invented structure")
    p.add_argument("--lag", type=flags.ranged(int, 1, 1000), default=None,
                   help="--video: frames apart at which to ask whether the fine texture moved with the anatomy (8)")
    p.add_argument("--layout", default=job.targets_layout, choices=TARGET_LAYOUTS,
                   help="the layout of the --targets files (as `stylize --layout` names its inputs'): triptych: the "
                        "target is the HQ panel of the same-named triptych")
    p.add_argument("--fid", action="store_true", help="also FID over patches (per image and whole set) and set KID")
    p.add_argument("--nakagami", action="store_true", help="also the Nakagami m of outputs and targets (speckle)")
    p.add_argument("--realism", action="store_true",
                   help="also the realism report, no ImageNet weights needed: C2ST, speckle FWHM, Nakagami m in tissue "
                        "(label map from triptych targets), tissue histogram W1, low-passed SSIM")
    p.add_argument("--c2st-repeats", type=flags.ranged(int, 1, 100), default=job.c2st_repeats,
                   help="--realism: C2ST classifiers averaged, each holding out other images (the figure comes with "
                        "its standard error; on 24 images a mean of 3 moves by up to ±0.1 with the split)")
    p.add_argument("--dynamic-range", type=flags.ranged(float, 0, 200, above=True), default=job.dynamic_range_db,
                   help="dB of log compression, to recover envelopes")
    p.add_argument("--inception-weights", default=job.inception_weights,
                   help="torchvision InceptionV3 state dict, or 'random' (tests)")
    p.add_argument("--patch", type=flags.side, default=job.patch, help="FID patch size (thesis: 299)")
    p.add_argument("--csv", default=None, help="write per-image rows here")
    flags.add_json_flag(p, "rows and summary")
    p.set_defaults(func=run_metrics)


def run_metrics(args) -> int:
    if args.video:
        return _video_metrics(args)
    if args.lag is not None:
        raise ValueError("--lag applies to --video only")
    if args.input and not args.realism:
        raise ValueError("--input applies to --video and --realism only")
    if not args.targets:
        raise ValueError("--targets is required (or --video with --input for temporal stability)")
    from usnst.offline.evaluate import MetricsJob, evaluate, format_table, write_outputs

    result = evaluate(MetricsJob(args.outputs, args.targets, args.layout, args.fid, args.inception_weights,
                                 args.patch, args.nakagami, args.dynamic_range, args.realism, args.c2st_repeats,
                                 inputs=args.input, progress=not args.quiet))
    flags.say(args, format_table(result))
    write_outputs(result, args.csv, None)
    flags.emit_json(args, result)
    return 0 if result["rows"] else 1


def _video_metrics(args) -> int:
    from usnst.offline.temporal import flicker, sequence_texture_motion
    from usnst_io.media import read_sequence

    if not args.input:
        raise ValueError("--video needs --input: the input sequence the outputs were made from")
    inputs, outputs = read_sequence(args.input).frames, read_sequence(args.outputs).frames
    result = flicker(inputs, outputs)
    static = result["static_output_change"]
    flags.say(args, f"temporal stability over {result['frames']} frames: input changes {result['input_change']:.3f} grey levels "
          f"per frame, output {result['output_change']:.3f} (ratio {result['ratio']:.3f}; 1 = moves as the input, "
          f"> 1 = flicker); on {result['static_pairs']} static input pairs the output changed "
          + (f"{static:.3f}" if static is not None else "n/a"))
    lag = args.lag or 8
    if len(inputs) > lag:
        flat_face = _flat_face(inputs)
        motion = result["texture_motion"] = sequence_texture_motion(inputs, outputs, lag, flat_face=flat_face)
        motion["flat_face"] = flat_face
        view = "a linear array's view, " if flat_face else ""
        flags.say(args, f"fine texture, frames {lag} apart: follows the anatomy in {motion['following']:.0%} of "
                        f"{motion['windows']} moving tissue windows; correlation after the anatomy's motion "
                        f"{motion['after_motion']:.2f}, at zero shift {motion['at_zero']:.2f} (high: stuck to the "
                        f"screen); anatomy's motion estimated from the input ({view}rigid), lost on "
                        f"{motion['motion_lost']} frames"
                  if motion["windows"] else f"fine texture: no tissue window moved ≥ 1.5 px between frames {lag} apart")
    elif args.lag:
        raise ValueError(f"--lag {args.lag}: the sequence has only {len(inputs)} frames")
    flags.emit_json(args, result)
    return 0


def _flat_face(frames: list) -> bool:
    """Whether the input shows a linear array's view (a band or a trapezoid), as the beam-speckle stage fits it: its
    straight edges need the wider margin when the motion is estimated (with a fan's, the estimate of a linear view
    fell short of the true motion). False where no view fits the first lit frames."""
    import numpy as np

    from usnst.engines.beam_speckle import NoFan, fit_fan

    for frame in frames[:8]:
        try:
            return fit_fan(np.asarray(frame, np.float32) / 255.0).flat_face
        except NoFan:
            continue
    return False


# -- clean ----------------------------------------------------------------------------------------------
def clean_flags(p) -> None:
    p.add_argument("inputs", help="folder (recursive) or glob of screenshots (PNG/JPEG or DICOM)")
    p.add_argument("--out", required=True, help="folder for the cleaned PNGs and cleaning.json (not the input folder)")
    p.add_argument("--overwrite", action="store_true", help="write into a folder that already holds files")
    p.set_defaults(func=run_clean)


def run_clean(args) -> int:
    from usnst.offline.screenshot import clean_folder

    s = clean_folder(args.inputs, args.out, args.overwrite)
    for row in s["rows"]:
        print(f"{row['output']}: kept {100 * row['region_fraction']:.1f}% of the frame as image, "
              f"{row['ui_pixels_removed']} UI pixels blanked, {row['overlay_pixels_inpainted']} overlay pixels inpainted, "
              f"bars {row['bars'] if isinstance(row['bars'], str) else ', '.join(row['bars']) or 'none'}")
    for f in s["failures"]:
        print(f"not cleaned: {f['input']}: {f['error']}")
    print(f"usnst clean: {s['images']} cleaned -> {args.out} (report: cleaning.json)")
    return 0 if not s["failures"] else 1


# -- real-scanners ---------------------------------------------------------------------------------------
def real_scanners_flags(p) -> None:
    from usnst.offline.real_scanners import KEEP_PER_RECORDING, MIN_CHANGE

    p.add_argument("--out", required=True, help="folder for train/ and held_out/ frames and manifest.json")
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "usnst" / "real-scanners"),
                   help="where the downloaded archives and their extracted scans are kept (default %(default)s)")
    p.add_argument("--min-change", type=flags.ranged(float, 0, 255), default=MIN_CHANGE,
                   help="mean grey-level change that makes a video frame distinct from the last kept "
                        "(default %(default)s)")
    p.add_argument("--height", type=flags.ranged(int, 16, 4096), default=None,
                   help="scale every frame to this many rows (e.g. the simulator's frame height); default: as "
                        "the scanner wrote it")
    p.add_argument("--keep-triptychs", metavar="DIR",
                   help="also write the training side's frames as LQ | HQ | label triptychs whose LQ and HQ are the "
                        "frame itself: real frames a net trained on them with the phantom's learns to leave as they "
                        "are (the lq2hq_fast and lq2hq recipes)")
    p.add_argument("--per-recording", type=flags.ranged(int, 1, 100000), default=None,
                   help="--keep-triptychs: at most this many frames of each recording, evenly spread (default "
                        f"{KEEP_PER_RECORDING})")
    p.add_argument("--overwrite", action="store_true", help="replace a set (and triptychs) already there")
    p.set_defaults(func=run_real_scanners)


def run_real_scanners(args) -> int:
    from usnst.offline.real_scanners import (
        KEEP_PER_RECORDING,
        build,
        write_keep_triptychs,
    )
    from usnst_io.media import refuse_existing

    if args.per_recording is not None and not args.keep_triptychs:
        raise ValueError("--per-recording applies to --keep-triptychs only")
    if args.keep_triptychs:
        refuse_existing(args.keep_triptychs, args.overwrite, "--keep-triptychs")
    m = build(args.out, args.cache, args.min_change, args.overwrite, args.height,
              say=lambda line: flags.say(args, line))
    for r in m["recordings"]:
        print(f"{r['split']:>8}  {r['id']:<28} {r['scanner']:<22} {r['probe']:<11} {r['frames']:>4} frames")
    print(f"usnst real-scanners: {m['frames']['train']} training and {m['frames']['held_out']} held-out frames "
          f"({', '.join(m['held_out_makers'])} held out) -> {args.out}; {len(m['left_out'])} files left out, "
          f"each with its reason, in manifest.json")
    if args.keep_triptychs:
        n = write_keep_triptychs(args.out, args.keep_triptychs, args.per_recording or KEEP_PER_RECORDING)
        print(f"usnst real-scanners: {n} training frames as LQ = HQ triptychs -> {args.keep_triptychs}")
    return 0


# -- speckle --------------------------------------------------------------------------------------------
def speckle_flags(p) -> None:
    from usnst.engines.acoustics import HQ_SAMPLE_MM
    from usnst.engines.beam_speckle import BeamSpeckleConfig

    d = BeamSpeckleConfig()
    p.add_argument("--model", help="checkpoint or embedded model name the stage is added to (default: the default model)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--triptychs", help="folder of LQ | HQ | seg triptychs: fit to the HQ panels, in tissue")
    target.add_argument("--style", help="folder, image or DICOM of target-domain frames from a sector probe")
    p.add_argument("--out", required=True, help="the new checkpoint: the same net, the fitted stage in its metadata")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint at --out")
    p.add_argument("--rays", type=flags.ranged(int, 2, 4096), default=d.rays, help="beams of the target scanner (the polar grid's width)")
    p.add_argument("--samples", type=flags.ranged(int, 2, 8192), default=d.samples, help="samples along each beam")
    p.add_argument("--base-sigma", type=flags.ranged(float, 0, 64), default=d.base_sigma,
                   help="px: low-pass of the net's output before the grain is added (0: none)")
    p.add_argument("--detail", type=flags.fraction, default=d.detail,
                   help="share of the net's own fine texture kept under the grain (0…1; 0.7 keeps what SSIM rewards)")
    p.add_argument("--sample-mm", type=flags.ranged(float, 0, 100), default=d.sample_mm,
                   help="mm per sample along a beam of the target frames (the phantom's original probe: "
                        f"{HQ_SAMPLE_MM:.4f}): frames that come with a pose then keep the axial PSF in mm "
                        "(default 0: unknown, the widths stay in samples)")
    p.add_argument("--mean-shown", action="store_true",
                   help="add the grain under the display's clipping, so the mean grey shown is the net's (dark fluid "
                        "stays dark with sparse speckle; whole-sector C2ST of lq2hq_fast 0.95 → 0.92, its card)")
    p.add_argument("--net-depth-px", type=flags.ranged(float, 0, 1 << 16), default=None,
                   help="a beam's length in px in the frames the net was trained at: frames whose beams are over "
                        "1.2× longer or shorter are resampled to it for the net (default with --triptychs: the input "
                        "panels' median; with --style or --no-fit: 0, the net takes every frame as sent)")
    p.add_argument("--frames", type=flags.positive_int, default=12, help="target frames measured")
    p.add_argument("--no-fit", action="store_true", help="keep the given/default PSF widths and contrast")
    fit_grey = p.add_mutually_exclusive_group()
    fit_grey.add_argument("--fit-level", action="store_true",
                          help="with --triptychs: also shift the output's grey inside the fan to the HQ panels' "
                               "tissue mean (for a base that sits above or below it, e.g. one trained by squared error)")
    fit_grey.add_argument("--fit-curve", action="store_true",
                          help="with --triptychs: also fit the mean grey shown at each of the net's grey levels to "
                               "the HQ panels', everywhere in the view, with the grain under the display's clipping "
                               "(implies --mean-shown; fluid as dark as HQ's: docs/lab/lq2hq_fast.md)")
    p.add_argument("--curve-from", default=None,
                   help="with --fit-curve: triptych folders (comma-separated; --frames of each) the curve is fitted "
                        "on, e.g. frames of every image formation the model will meet (default: the --triptychs frames)")
    p.set_defaults(func=run_speckle)


def run_speckle(args) -> int:
    """Fit the beam-speckle stage to target frames and store it with a model: every backend then runs it after the
    net (engines.beam_speckle), and `usnst engine build` carries it into ONNX artifacts."""
    from dataclasses import replace

    from usnst.engines.beam_speckle import META_KEY, BeamSpeckleConfig
    from usnst.engines.checkpoint import load_checkpoint, resolve_model, save_checkpoint
    from usnst.offline.datasets import read_triptych_folder
    from usnst.offline.speckle_fit import fit_beam_speckle
    from usnst.offline.tasks import task
    from usnst_io.media import read_stills, to_uint8

    for flag, fitted in (("--fit-level", args.fit_level), ("--fit-curve", args.fit_curve)):
        if fitted and not args.triptychs:
            raise ValueError(f"{flag} needs --triptychs: it is fitted with the model run on paired input panels, "
                             "and --style frames have none")
        if fitted and args.no_fit:
            raise ValueError(f"{flag} is a fit: drop it or --no-fit")
    if args.curve_from and not args.fit_curve:
        raise ValueError("--curve-from names the frames --fit-curve fits the grey curve on: give --fit-curve too")
    from usnst_io.media import refuse_existing

    refuse_existing(args.out, args.overwrite)
    start = BeamSpeckleConfig(rays=args.rays, samples=args.samples, base_sigma=args.base_sigma, detail=args.detail,
                              sample_mm=args.sample_mm, mean_shown=args.mean_shown)
    source = resolve_model(args.model)
    net, meta = load_checkpoint(source)
    if args.no_fit:
        config = start
    else:
        if args.triptychs:  # paired: fitted on the model's own outputs for the input panels, against their HQ
            from usnst.engines.base import EngineOptions
            from usnst.engines.body_engine import TorchEagerEngine

            panels = read_triptych_folder(args.triptychs)
            source = task(meta.get("task") or "lq2hq").source
            net_engine = TorchEagerEngine(net, EngineOptions(seed=0))
            curve_pairs = None
            if args.curve_from:
                curve_panels = [t for d in args.curve_from.split(",") for t in read_triptych_folder(d)[: args.frames]]
                curve_pairs = [(to_uint8(getattr(t, source)), to_uint8(t.hq)) for t in curve_panels]
            fit = fit_beam_speckle([to_uint8(t.hq) for t in panels], [t.seg for t in panels], start,
                                   max_frames=args.frames, inputs=[getattr(t, source) for t in panels],
                                   run=net_engine.infer, fit_level=args.fit_level, fit_curve=args.fit_curve,
                                   curve_pairs=curve_pairs)
        else:
            fit = fit_beam_speckle([to_uint8(i) for i in read_stills(args.style)], None, start, max_frames=args.frames)
        config = fit["config"]
        t, f = fit["target"], fit["fitted"]
        print(f"measured on {fit['frames']} target frames: speckle FWHM {t['fwhm_axial_px']:.2f} / "
              f"{t['fwhm_lateral_px']:.2f} px (axial / lateral), grain std {t['grain_std']:.1f} grey levels; "
              f"the stage's: {f['fwhm_axial_px']:.2f} / {f['fwhm_lateral_px']:.2f} px, {f['grain_std']:.1f}")
    depth = args.net_depth_px
    if depth is None:
        depth = fit["depth_px"] if args.triptychs and not args.no_fit else 0.0
    config = replace(config, net_depth_px=float(depth))
    meta[META_KEY] = config.to_dict()
    meta["beam_speckle_from"] = args.triptychs or args.style or "defaults"
    save_checkpoint(args.out, net, meta)
    print(f"usnst speckle: PSF {config.lateral_sigma:g} ray × {config.axial_sigma:g} samples on {config.rays} × "
          f"{config.samples}, {config.contrast * 255:.1f} grey levels per neper, base σ {config.base_sigma:g} px, "
          f"detail {config.detail:g}" + (f", level {config.level * 255:+.1f} grey" if config.level else "") +
          (", grey curve (dark end: base 40 shows {:.1f})".format(config.grey_curve[40] * 255)
           if config.grey_curve else "") +
          (f", net at {config.net_depth_px:.0f}-px beams" if config.net_depth_px else "") +
          f" -> {args.out}")
    return 0


# -- scanner-texture ------------------------------------------------------------------------------------
def scanner_texture_flags(p) -> None:
    p.add_argument("--model", help="checkpoint or embedded model name the stage is added to (default: the default model)")
    p.add_argument("--real", required=True,
                   help="real scanner frames: a folder of recordings (one subfolder each, e.g. the train/ side that "
                        "`usnst real-scanners` writes) or of stills; the texture and grey curve come from them")
    p.add_argument("--triptychs", required=True,
                   help="folder of LQ | HQ | seg triptychs: the model's outputs on their input panels (the model's "
                        "task says which) give the grey levels the map takes to the real frames'")
    p.add_argument("--out", required=True, help="the new checkpoint: the same net, the stages in its metadata")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint at --out")
    p.add_argument("--block", type=flags.ranged(int, 8, 256), default=48, help="px: the side of a texture block")
    p.add_argument("--per-recording", type=flags.positive_int, default=24,
                   help="frames of each recording used, evenly spread (a long cine would otherwise be the set)")
    p.add_argument("--base-sigma", type=flags.ranged(float, 0, 64), default=2.0,
                   help="px: low-pass of the net's output under the texture (its own grain out)")
    p.add_argument("--frames", type=flags.positive_int, default=24, help="triptychs the grey map is measured on")
    p.add_argument("--task", choices=["lq2hq", "hq2clinical"], default=None,
                   help="the new model's task, so the panel it is given: lq2hq the simulator's frame (LQ), hq2clinical "
                        "the phantom's HQ; the grey map is measured on that panel (default: the model's own task)")
    p.add_argument("--seed", type=flags.seed, default=0, help="which blocks are cut")
    p.set_defaults(func=run_scanner_texture)


def run_scanner_texture(args) -> int:
    """Give a model a real scanner's texture: blocks of real frames laid along its beams after the net, at the real
    frames' strength and grey curve (engines.scanner_texture), on every backend."""
    from dataclasses import replace

    from usnst.engines.base import EngineOptions
    from usnst.engines.beam_speckle import META_KEY, BeamSpeckleConfig, SpeckledEngine
    from usnst.engines.body_engine import TorchEagerEngine
    from usnst.engines.checkpoint import load_checkpoint, resolve_model, save_checkpoint
    from usnst.engines.scanner_texture import META_KEY as TEXTURE_KEY
    from usnst.offline.datasets import read_triptych_folder
    from usnst.offline.real_scanners import recording_frames
    from usnst.offline.scanner_texture import fit_scanner_texture
    from usnst.offline.tasks import task
    from usnst_io.media import read_stills, refuse_existing, to_float, to_uint8

    refuse_existing(args.out, args.overwrite)
    real_dir = Path(args.real)
    if real_dir.is_dir() and any(p.is_dir() for p in real_dir.iterdir()):
        real, _, names = recording_frames(real_dir, args.per_recording)
    else:
        real, names = read_stills(real_dir), [real_dir.name]
    net, meta = load_checkpoint(resolve_model(args.model))
    # the texture takes the place of the net's own grain: none of it is kept under the texture (detail 0), and it
    # brings its own grey map and strength per grey level (so no grey curve, no grain under the clipping)
    config = replace(BeamSpeckleConfig.from_dict(meta.get(META_KEY) or {}), base_sigma=args.base_sigma, detail=0.0,
                     mean_shown=False, grey_curve=())
    meta["task"] = args.task or meta.get("task") or "lq2hq"
    panels = read_triptych_folder(args.triptychs)[: args.frames]
    source = task(meta["task"]).source
    base = SpeckledEngine(TorchEagerEngine(net, EngineOptions(seed=0)), config, EngineOptions(noise="off"))
    outputs = [to_uint8(base.infer(to_float(getattr(t, source)))) for t in panels]
    texture = fit_scanner_texture(real, outputs, args.block, seed=args.seed, sources=", ".join(names))
    meta[META_KEY], meta[TEXTURE_KEY] = config.to_dict(), texture.to_dict()
    meta["scanner_texture_from"] = str(args.real)
    meta["training"] = "; ".join(filter(None, [meta.get("training", ""), "then a real scanner's texture and grey curve "
                                               f"from {len(real)} frames of {len(names)} recordings (usnst scanner-texture)"]))
    save_checkpoint(args.out, net, meta)
    print(f"usnst scanner-texture: {texture.count} blocks of {texture.block} px from {len(real)} frames of "
          f"{len(names)} recordings (beams of {texture.depth_px:.0f} px); strength {texture.amplitude[40] * 255:.1f} / "
          f"{texture.amplitude[120] * 255:.1f} grey at grey 40 / 120; base σ {config.base_sigma:g} px -> {args.out}")
    return 0


# name → (help line, function adding its flags); usnst.cli builds a command's flags only when it runs
# -- export ---------------------------------------------------------------------------------------------
def export_flags(p) -> None:
    p.add_argument("source", help="a recording (.usrec), video, DICOM file or image folder")
    p.add_argument("--out", required=True, help="a video file (.mp4: H.264, plays in browsers; .avi: "
                   "MJPG) or a folder for PNG frames plus times.csv")
    p.add_argument("--fps", type=flags.positive_float, default=30.0,
                   help="video: the file's frame rate (frames still appear at their recorded times) (default 30)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing video, or frames in the folder")
    p.set_defaults(func=run_export)


def run_export(args) -> int:
    """Frames of any sequence at their own timestamps: a video that lasts as long as the recording, or numbered PNGs
    with a times.csv (file, seconds from the first frame). Exit status 1 when the source lost frames (a damaged
    recording): the export holds what could be read, and says what could not."""
    from usnst_io.media import (
        VIDEO_SUFFIXES,
        TimedVideoWriter,
        gray_uint8,
        iter_sequence,
        refuse_existing,
        write_frame_times,
        write_png,
    )

    out = Path(args.out)
    as_video = out.suffix.lower() in VIDEO_SUFFIXES
    refuse_existing(out if as_video else out / "times.csv", args.overwrite)
    writer = TimedVideoWriter(out, args.fps) if as_video else None
    stop = flags.stop_on_signals()
    times, n, problems = [], 0, []
    try:
        for t, img, _ in iter_sequence(args.source, problems=problems):
            if stop.is_set():
                break
            frame = gray_uint8(img)
            if writer is not None:
                writer.add(t, frame)
            else:
                name = f"frame_{n:05d}.png"
                write_png(out / name, frame)
                times.append((name, t))
            n += 1
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if n == 0:
        raise ValueError(f"nothing to export: {args.source} has no readable frames")
    if writer is not None:
        writer.close()
        what = f"{writer.written} video frames at {args.fps:g} fps ({writer.written / args.fps:.2f} s)"
        if writer.gaps_shortened:
            what += f"; {writer.gaps_shortened} pause(s) longer than {writer.MAX_HOLD_S:g} s shown for {writer.MAX_HOLD_S:g} s"
        if writer.resized:
            what += f"; {writer.resized} frame(s) of another size than the first fitted into it"
    else:
        write_frame_times(out / "times.csv", [n for n, _ in times], [t for _, t in times])
        what = "PNG frames + times.csv"
    stopped = " (stopped early by a signal: the frames so far)" if stop.is_set() else ""
    print(f"usnst export: {n} frames of {args.source} -> {out}: {what}{stopped}")
    for problem in problems:
        print(f"usnst export: frames lost: {problem}", file=sys.stderr)
    return 1 if problems else 0


COMMANDS = {
    "export": ("write a recording, video, DICOM cine or image folder as a video or PNG frames at its own "
               "timestamps", export_flags),
    "phantom": ("write synthetic LQ | HQ | segmentation triptych PNGs (thesis layout)", phantom_flags),
    "nst": ("optimisation-based style transfer (Gatys) and the thesis variants", nst_flags),
    "stylize": ("stylize a folder or glob of images with a trained network (resumable, shardable)", stylize_flags),
    "metrics": ("SSIM, PSNR, FID/KID and Nakagami m of outputs against paired targets; flicker of a sequence "
                "(--video)", metrics_flags),
    "speckle": ("fit the beam-speckle stage (scanner-formed grain after the net) to target frames and store it "
                "with a model", speckle_flags),
    "scanner-texture": ("give a model a real scanner's texture and grey curve, taken from real frames, after its net",
                        scanner_texture_flags),
    "clean": ("clean scanner screenshots: keep the imaging region, remove bars, text, calipers", clean_flags),
    "real-scanners": ("download (pinned, hash-checked), decode and clean the real scanner frames of pydicom-data and "
                      "itk-pocus into a set split by scanner", real_scanners_flags),
}
