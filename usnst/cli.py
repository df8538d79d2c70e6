"""The `usnst` command: one entry point, one subcommand per job. This module only parses flags, wires the
packages together and words the results for a person; the work lives in the packages."""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

log = logging.getLogger("usnst")

ENDPOINT_HELP = "'@' binds, '>' connects (e.g. @tcp://127.0.0.1:5556, >ipc:///tmp/sim); comma-separate several"


def _size(text: str) -> tuple[int, int]:
    """'256' → (256, 256); '256x352' → height 256, width 352."""
    try:
        if "x" in text.lower():
            h, w = (int(v) for v in text.lower().split("x"))
        else:
            h = w = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be N or HxW, got {text!r}") from None
    if h < 8 or w < 8:
        raise argparse.ArgumentTypeError("size must be at least 8x8")
    return h, w


def _on_signals(action) -> None:
    """SIGINT/SIGTERM call ``action`` so long-running commands finish cleanly and print their summary."""

    def handler(signum, _frame):
        log.info("received %s, stopping", signal.Signals(signum).name)
        action()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    _on_signals(stop.set)
    return stop


def _engine_options(args):
    from engines.backends import EngineOptions

    return EngineOptions(noise=args.noise, seed=args.seed, threads=args.threads, device=args.device,
                         precision=args.precision)


def _add_engine_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="checkpoint path or embedded model name (default: the embedded lq2hq)")
    p.add_argument("--backend", default="torch",
                   help="inference backend: torch (eager), torch-compile, onnxruntime, tensorrt, auto (fastest here)")
    p.add_argument("--engine", default=None, help="prebuilt engine artifact (usnst engine build); checked against --model")
    p.add_argument("--noise", default="fixed", choices=["fixed", "frame", "off"],
                   help="noise injection: fixed per stream (no speckle boiling; default), fresh every frame, or off")
    p.add_argument("--seed", type=int, default=0, help="seed of the injected noise (reproducible outputs)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for inference (default: torch's)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (tensorrt always runs on cuda)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16"], help="fp16 on GPU only; norms stay fp32")


def _add_curve_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("CURVE encryption and authentication (keys from `usnst keys`)")
    g.add_argument("--curve-secret", default=None, help="this side's NAME.key_secret; turns CURVE on")
    g.add_argument("--curve-allow", default=None, help="where this side binds: folder of allowed clients' NAME.key")
    g.add_argument("--curve-server", default=None, help="where this side connects: the server's NAME.key")


def _curve(args):
    from usnst_stream.security import CurveConfig

    if not args.curve_secret:
        if args.curve_allow or args.curve_server:
            raise ValueError("--curve-allow/--curve-server need --curve-secret (this side's NAME.key_secret)")
        return None
    return CurveConfig(args.curve_secret, args.curve_allow, args.curve_server)


# -- subcommands ----------------------------------------------------------------------------------------
def cmd_serve(args) -> int:
    from engines.backends import load_engine
    from usnst_stream.node import Node, NodeConfig
    from usnst_stream.protocol import Limits

    engine = load_engine(args.model, args.backend, _engine_options(args), args.engine)
    cfg = NodeConfig(input=args.input, output=args.output, limits=Limits(args.max_width, args.max_height),
                     stats_interval=args.stats_interval, input_topic=args.input_topic.encode(),
                     output_topic=args.output_topic.encode(), curve=_curve(args), igtl_spacing_mm=args.igtl_spacing)
    node = Node(engine, cfg).start()
    _on_signals(node.request_stop)
    print(f"usnst serve: {engine.describe()['backend']} engine; subscribing {', '.join(node.endpoints['input'])}; "
          f"publishing {', '.join(node.endpoints['output'])}. Ctrl-C stops.", flush=True)
    final = node.run(args.duration)
    print(f"usnst serve: stopped. {node.stats.summary_line()}", flush=True)
    if args.json:
        print(json.dumps(final))
    return 0


def cmd_simulate(args) -> int:
    from usnst_stream.publisher import open_publisher, publish
    from usnst_stream.sources import limited, phantom_stream

    stop = _stop_on_signals()
    h, w = args.size
    sock, bound = open_publisher(args.output, curve=_curve(args))
    print(f"usnst simulate: publishing {args.quality.upper()} {h}x{w} {args.dtype} frames at {args.fps:g} fps on "
          f"{', '.join(bound)}. Ctrl-C stops.", flush=True)
    source = limited(phantom_stream(h, w, args.fps, args.quality, args.seed, args.dtype), args.frames, args.duration)
    counts = publish(source, sock, stop)
    sock.close()
    print(f"usnst simulate: sent {counts['sent']} frames ({counts['late']} late).", flush=True)
    return 0


def cmd_phantom(args) -> int:
    from tqdm import tqdm

    from usnst_stream.phantom import write_phantoms

    h, w = args.size
    with tqdm(total=args.n, desc="phantoms", unit="img", disable=None) as bar:
        paths = write_phantoms(args.out, args.n, h, w, args.seed, progress=bar.update)
    print(f"usnst phantom: wrote {len(paths)} triptychs (LQ | HQ | segmentation, {h}x{w} each) to {args.out}")
    return 0


def cmd_record(args) -> int:
    from usnst_stream.recording import record

    stop = _stop_on_signals()
    print(f"usnst record: recording {args.input} to {args.out}. Ctrl-C stops.", flush=True)
    counts = record(args.input, args.out, stop, args.frames, args.duration, args.topic.encode(), curve=_curve(args))
    print(f"usnst record: wrote {counts['written']} messages to {counts['path']}; {counts['missing_by_seq']} frames "
          f"missing from the sequence numbers; {counts['invalid']} not valid frames.", flush=True)
    return 0


def cmd_replay(args) -> int:
    from usnst_stream.publisher import open_publisher, publish
    from usnst_stream.sources import limited, looped, open_source

    stop = _stop_on_signals()
    make = lambda: open_source(args.source, args.fps, args.restamp)
    make()  # fail now, with a clear message, if the source cannot be opened
    times = None if args.loop == 0 else args.loop
    source = limited(looped(make, times), args.frames)
    sock, bound = open_publisher(args.output, curve=_curve(args))
    print(f"usnst replay: publishing {args.source} on {', '.join(bound)}"
          f"{' at ' + format(args.fps, 'g') + ' fps' if args.fps else ' at its recorded timing'}"
          f"{' x' + format(args.speed, 'g') if args.speed != 1 else ''}. Ctrl-C stops.", flush=True)
    import time

    time.sleep(args.settle)  # give subscribers a moment to connect before the first frame
    counts = publish(source, sock, stop, args.speed)
    sock.close()
    print(f"usnst replay: sent {counts['sent']} messages ({counts['late']} late).", flush=True)
    return 0


def cmd_demo(args) -> int:
    from usnst_stream.demo import DemoConfig, run_demo

    h, w = args.size
    cfg = DemoConfig(seconds=args.seconds, fps=args.fps, height=h, width=w, model=args.model, backend=args.backend,
                     transport=args.transport, out=args.out, seed=args.seed)
    print(f"usnst demo: simulator -> node -> consumer over {cfg.transport} on loopback, {h}x{w} frames at "
          f"{cfg.fps:g} fps for {cfg.seconds:g} s ...", flush=True)
    r = run_demo(cfg)
    node, cons = r["node"], r["consumer"]
    lat = node["latency_ms"]
    e2e = cons["end_to_end_ms"]
    print(f"  engine      {r['engine']['backend']} ({r['engine'].get('task') or 'model'}), noise {r['engine']['noise']}")
    print(f"  simulator   sent {r['simulator']['sent']} frames at {cfg.fps:g} fps")
    print(f"  node        stylized {node['published']} frames ({node['fps_out']:.1f} fps), dropped {node['dropped']} "
          f"to stay current, lost {node['lost']}, rejected {node['rejected']}")
    print(f"  latency     inference p50 {lat['infer']['p50']:.1f} ms, p99 {lat['infer']['p99']:.1f} ms; "
          f"queued p50 {lat['wait']['p50']:.1f} ms")
    print(f"  end to end  capture -> consumer p50 {e2e['p50']:.1f} ms, p99 {e2e['p99']:.1f} ms, max {e2e['max']:.1f} ms "
          f"({cons['received']} frames received, {cons['fps']:.1f} fps)")
    if "picture" in r:
        print(f"  picture     {r['picture']} (input | stylized | high-quality reference)")
    else:
        print("  picture     none: no stylized frame reached the consumer")
    if args.json:
        print(json.dumps(r))
    return 0 if cons["received"] > 0 else 1


def _given(args, names) -> dict:
    """The flags the user actually gave, so each trainer's own defaults apply to the rest."""
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def cmd_train(args) -> int:
    if args.loss == "distill":
        from trainer.distill import DistillConfig, distill

        cfg = DistillConfig(data=args.data, progress=not args.quiet, **_given(
            args, ["teacher", "out", "steps", "batch", "crop", "lr", "channels", "blocks", "seed"]))
        meta = distill(cfg)
        v = meta["validation"]
        print(f"usnst train: distilled {cfg.out} from {meta['teacher']} in {meta['train_seconds']:.0f} s; L1 to teacher "
              f"{meta['first_l1']:.4f} -> {meta['final_l1']:.4f}")
        if v:
            print(f"  held-out SSIM vs HQ: student {v['student_ssim']:.3f}, teacher {v['teacher_ssim']:.3f}, "
                  f"identity {v['identity_ssim']:.3f}")
        return 0
    if args.loss == "l1":
        from trainer.supervised import SupervisedConfig, train

        cfg = SupervisedConfig(data=args.data, **_given(args, ["out", "steps", "batch", "crop", "lr", "width",
                                                               "n_residual", "seed", "threads"]), noise=not args.no_noise)
        meta = train(cfg)
        v = meta["validation"]
        print(f"usnst train: saved {cfg.out} after {meta['steps']} steps ({meta['train_seconds']:.0f} s); L1 "
              f"{meta['first_l1']:.4f} -> {meta['final_l1']:.4f}")
        if v:
            print(f"  held-out: SSIM {v['ssim']:.3f} (identity {v['identity_ssim']:.3f}), "
                  f"PSNR {v['psnr']:.2f} dB (identity {v['identity_psnr']:.2f} dB)")
        return 0
    from trainer.perceptual import TrainConfig, train

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cfg = TrainConfig(data=args.data, noise=not args.no_noise, amp=not args.no_amp, deterministic=args.deterministic,
                      resume=args.resume, progress=not args.quiet,
                      **_given(args, ["out_dir", "task", "style", "steps", "batch", "crop", "size", "lr", "content_weight",
                                      "style_weight", "pixel_weight", "ssim_weight", "width", "n_residual", "val_every", "ckpt_every",
                                      "vgg_weights", "inception_weights", "seed", "device"]))
    r = train(cfg)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun, rank 0 reports for all
    print(f"usnst train: {cfg.task}, {r['steps']} steps, loss {r['first_loss']:.4g} -> {r['last_loss']:.4g}, "
          f"{r['images_per_s']:.2f} images/s; checkpoints in {r['out_dir']} (best.pt, final.pt, last_state.pt)")
    v = r.get("validation") or {}
    if "ssim" in v:
        print(f"  held-out: SSIM {v['ssim']:.3f} (identity {v['identity_ssim']:.3f}), "
              f"PSNR {v['psnr']:.2f} dB (identity {v['identity_psnr']:.2f} dB)")
    elif "fid" in v:
        print(f"  held-out: FID to the style set {v['fid']:.2f}")
    return 0


def cmd_bench(args) -> int:
    from engines.backends import load_engine
    from engines.checkpoint import load_checkpoint, resolve_model
    from engines.fast_net import conv_gflops
    from usnst_stream.bench import (
        BenchPlan,
        engine_latency,
        format_engine_table,
        format_report,
        machine,
        plot_latency_cdf,
        run_bench,
        strip_samples,
    )

    sizes = [int(v) for v in args.sizes.split(",")]
    net, _ = load_checkpoint(resolve_model(args.model))
    gflop = {s: conv_gflops(net, s, s) for s in sizes}
    curves = {}
    if args.soak:
        from usnst_stream.bench import format_soak, soak

        engine = load_engine(args.model, args.backend, _engine_options(args), args.engine)
        result = soak(engine, sizes[0], args.fps, args.soak, args.soak_window, args.transports.split(",")[0])
        print(format_soak(result))
    elif args.engine_only:
        rows = []
        for backend in args.backends.split(","):
            engine = load_engine(args.model, backend, _engine_options(args))
            rows += [engine_latency(engine, s, args.frames, gflop=gflop[s]) for s in sizes]
        result = {"machine": machine(), "engine_only": rows}
        print(format_engine_table(rows))
    else:
        engine = load_engine(args.model, args.backend, _engine_options(args), args.engine)
        rates = tuple(float(v) for v in args.rates.split(",")) if args.rates else None
        plan = BenchPlan(sizes=tuple(sizes), transports=tuple(args.transports.split(",")), seconds=args.seconds,
                         rates=rates, engine_frames=args.frames, messages=args.messages, max_drop=args.max_drop,
                         gflop=gflop)
        result, curves = strip_samples(run_bench(engine, plan))
        print(format_report(result))
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    print(f"usnst bench: wrote {args.json}")
    if args.plot and curves:
        plot_latency_cdf(curves, args.plot)
        print(f"usnst bench: wrote {args.plot}")
    return 0


def cmd_nst(args) -> int:
    from offline.nst import NSTConfig
    from offline.nst_job import NSTJob, run_job

    nst = NSTConfig(task=args.task, content_weight=args.content_weight, style_weight=args.style_weight, lr=args.lr,
                    iterations=args.iterations, init=args.init, seed=args.seed, progress=not args.quiet)
    job = NSTJob(out=args.out, content=args.content, style=args.style, content_seg=args.content_seg,
                 style_seg=args.style_seg, triptych=args.triptych, style_dir=args.style_dir, average=args.average,
                 variant=args.variant, size=args.size, clear_background=args.clear_background,
                 vgg_weights=args.vgg_weights, device=args.device, nst=nst)
    r = run_job(job)
    total, content, style = r["final_loss"] or (float("nan"),) * 3
    print(f"usnst nst: {r['variant']} NST, {nst.iterations} iterations in {r['seconds']:.1f} s -> {r['output']} "
          f"(final loss {total:.4g}: content {content:.4g}, style {style:.4g})")
    print(f"  VGG19 weights: {r['vgg_weights']}")
    if "metrics_vs_hq" in r:
        m = r["metrics_vs_hq"]
        print(f"  vs HQ: SSIM {m['ssim']:.3f} (input {m['identity_ssim']:.3f}), PSNR {m['psnr']:.2f} dB "
              f"(input {m['identity_psnr']:.2f} dB)")
    print(f"  loss curves: {Path(r['output']).with_suffix('.losses.csv')}, .losses.png; report: .json")
    return 0


def cmd_stylize(args) -> int:
    from engines.backends import load_engine
    from offline.stylize import StylizeJob, parse_shard, run_stylize

    engine = load_engine(args.model, args.backend, _engine_options(args), args.engine)
    job = StylizeJob(inputs=args.inputs, out=args.out, layout=args.layout, targets=args.targets,
                     metrics=args.metrics or bool(args.targets), shard=parse_shard(args.shard),
                     overwrite=args.overwrite, progress=not args.quiet, dicom_format=args.dicom_format)
    s = run_stylize(engine, job).summary()
    print(f"usnst stylize: {s['inputs']} inputs in this shard: {s['written']} written, {s['skipped_existing']} already "
          f"done, {s['failed']} failed -> {args.out}")
    if "mean_ssim" in s:
        print(f"  vs targets: SSIM {s['mean_ssim']:.3f} (input {s['mean_identity_ssim']:.3f}), "
              f"PSNR {s['mean_psnr']:.2f} dB (input {s['mean_identity_psnr']:.2f} dB)")
    for f in s["failures"]:
        print(f"  failed: {f['input']}: {f['error']}")
    return 1 if s["failed"] else 0


def cmd_metrics(args) -> int:
    if args.video:
        return _video_metrics(args)
    if not args.targets:
        raise ValueError("--targets is required (or --video with --input for temporal stability)")
    from offline.evaluate import MetricsJob, evaluate, format_table, write_outputs

    result = evaluate(MetricsJob(args.outputs, args.targets, args.targets_layout, args.fid, args.inception_weights,
                                 args.patch, args.nakagami, args.dynamic_range))
    print(format_table(result))
    write_outputs(result, args.csv, args.json)
    return 0 if result["rows"] else 1


def _video_metrics(args) -> int:
    from offline.temporal import flicker, read_sequence

    if not args.input:
        raise ValueError("--video needs --input: the input sequence the outputs were made from")
    result = flicker(read_sequence(args.input), read_sequence(args.outputs))
    static = result["static_output_change"]
    print(f"temporal stability over {result['frames']} frames: input changes {result['input_change']:.3f} grey levels "
          f"per frame, output {result['output_change']:.3f} (ratio {result['ratio']:.3f}; 1 = moves as the input, "
          f"> 1 = flicker); on {result['static_pairs']} static input pairs the output changed "
          + (f"{static:.3f}" if static is not None else "n/a"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def cmd_engine_build(args) -> int:
    from engines.checkpoint import resolve_model

    model = resolve_model(args.model)
    if args.backend == "tensorrt":
        from engines.tensorrt_backend import ShapeRange, build_tensorrt

        shapes = ShapeRange.parse(args.shapes)
        path = build_tensorrt(model, args.out, args.precision, shapes, args.device)
        print(f"usnst engine build: wrote {path} (+ .json record; TensorRT {args.precision}, frames {shapes}, "
              "noise as inputs)")
        return 0
    from engines.onnx_backend import export_onnx

    path = export_onnx(model, args.out)
    print(f"usnst engine build: wrote {path} (ONNX opset 17, fp32, dynamic frame size, noise as inputs)")
    return 0


def cmd_view(args) -> int:
    from usnst_stream.viewer import ViewConfig, Viewer

    cfg = ViewConfig(input=args.input, styled=args.styled, window=not args.no_window, out=args.out, fps=args.fps,
                     frames=args.frames, duration=args.duration)
    viewer = Viewer(cfg)
    print(f"usnst view: {args.input} | {args.styled}" + (f" -> {args.out}" if args.out else "") + ". Ctrl-C stops.",
          flush=True)
    result = viewer.run(_stop_on_signals())
    print(f"usnst view: showed {result['shown']} stylized frames ({result['unpaired']} without their input)"
          + (f"; wrote {args.out}" if args.out and result["shown"] else ""), flush=True)
    return 0


def cmd_clean(args) -> int:
    from offline.screenshot import clean_folder

    s = clean_folder(args.inputs, args.out)
    for row in s["rows"]:
        print(f"{row['output']}: kept {100 * row['region_fraction']:.1f}% of the frame as image, "
              f"{row['ui_pixels_removed']} UI pixels blanked, {row['overlay_pixels_inpainted']} overlay pixels inpainted, "
              f"bars {', '.join(row['bars']) or 'none'}")
    for f in s["failures"]:
        print(f"not cleaned: {f['input']}: {f['error']}")
    print(f"usnst clean: {s['images']} cleaned -> {args.out} (report: cleaning.json)")
    return 0 if not s["failures"] else 1


def cmd_keys(args) -> int:
    from usnst_stream.security import generate_keys

    for name in args.names:
        public, secret = generate_keys(args.out, name)
        print(f"usnst keys: {name}: public {public} (share it), secret {secret} (keep it; mode 600)")
    print("A side that binds lists its allowed clients' public keys in a folder (--curve-allow DIR); a side that "
          "connects names the server's public key (--curve-server FILE); each uses its own --curve-secret.")
    return 0


def cmd_info(args) -> int:
    from engines.checkpoint import read_checkpoint, resolve_model

    path = resolve_model(args.model)
    payload = read_checkpoint(path)
    n_params = sum(t.numel() for t in payload["state_dict"].values())
    print(json.dumps({"path": str(path), "config": payload["config"], "parameters": n_params, "meta": payload["meta"]},
                     indent=2, default=str))
    return 0


# -- parser ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="usnst", description="Real-time neural style transfer for ultrasound simulators.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="stylize a live frame stream (SUB -> engine -> PUB)")
    p.add_argument("--in", dest="input", default=">tcp://127.0.0.1:5555", help="simulator endpoint; " + ENDPOINT_HELP)
    p.add_argument("--out", dest="output", default="@tcp://127.0.0.1:5556",
                   help="output endpoint(s); " + ENDPOINT_HELP + "; igtl://127.0.0.1:18944 serves OpenIGTLink IMAGE messages")
    _add_engine_flags(p)
    p.add_argument("--max-width", type=int, default=4096, help="reject frames wider than this")
    p.add_argument("--max-height", type=int, default=4096, help="reject frames taller than this")
    p.add_argument("--input-topic", default="usnst/frame")
    p.add_argument("--output-topic", default="usnst/stylized")
    p.add_argument("--stats-interval", type=float, default=5.0, help="seconds between stats lines (0: none)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--json", action="store_true", help="print the final stats as JSON")
    p.add_argument("--igtl-spacing", type=float, default=1.0,
                   help="igtl:// outputs: pixel spacing in mm for frames whose meta has no spacing_mm")
    _add_curve_flags(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("simulate", help="publish synthetic B-mode frames like an ultrasound simulator")
    p.add_argument("--out", dest="output", default="@tcp://127.0.0.1:5555", help=ENDPOINT_HELP)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--size", type=_size, default=(256, 256), help="N or HxW (default 256)")
    p.add_argument("--quality", default="lq", choices=["lq", "hq", "seg"], help="which rendering to publish")
    p.add_argument("--dtype", default="uint8", choices=["uint8", "uint16", "float32"])
    p.add_argument("--frames", type=int, default=None, help="stop after N frames")
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    p.add_argument("--seed", type=int, default=0, help="scene seed")
    _add_curve_flags(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("phantom", help="write synthetic LQ | HQ | segmentation triptych PNGs (thesis layout)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("-n", type=int, default=10, help="number of samples")
    p.add_argument("--size", type=_size, default=(1000, 1386), help="panel size N or HxW (default 1000x1386, the thesis')")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_phantom)

    p = sub.add_parser("record", help="record a frame stream to a crash-safe file")
    p.add_argument("--in", dest="input", default=">tcp://127.0.0.1:5556", help=ENDPOINT_HELP)
    p.add_argument("--out", required=True, help="recording file (.usrec)")
    p.add_argument("--topic", default="", help="topic prefix to record (default: all)")
    p.add_argument("--frames", type=int, default=None)
    p.add_argument("--duration", type=float, default=None)
    _add_curve_flags(p)
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("replay", help="publish a recording, a folder of images or a video")
    p.add_argument("source", help="recording file, image folder or video file")
    p.add_argument("--out", dest="output", default="@tcp://127.0.0.1:5555", help=ENDPOINT_HELP)
    p.add_argument("--fps", type=float, default=None, help="fixed rate instead of the recorded timing")
    p.add_argument("--speed", type=float, default=1.0, help="timing multiplier (2 = twice as fast)")
    p.add_argument("--loop", type=int, default=1, help="play N times (0: for ever)")
    p.add_argument("--frames", type=int, default=None, help="stop after N messages")
    p.add_argument("--restamp", action="store_true", help="set capture_ns to the replay time")
    p.add_argument("--settle", type=float, default=0.5, help="seconds to wait for subscribers before the first frame")
    _add_curve_flags(p)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("demo", help="simulator -> node -> consumer on loopback, with stats and a picture")
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--fps", type=float, default=15.0)
    p.add_argument("--size", type=_size, default=(256, 256))
    p.add_argument("--model", default=None)
    p.add_argument("--backend", default="torch")
    p.add_argument("--transport", default="tcp", choices=["tcp", "ipc"])
    p.add_argument("--out", default="usnst-demo.png", help="side-by-side picture to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="also print the full report as JSON")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a transform net: perceptual loss (thesis) or supervised L1")
    p.add_argument("--data", required=True, help="folder of LQ | HQ | seg triptychs (usnst phantom writes them)")
    p.add_argument("--loss", default="perceptual", choices=["perceptual", "l1", "distill"],
                   help="distill: train the CPU real-time net to reproduce --teacher")
    p.add_argument("--teacher", default=None, help="distill: teacher checkpoint (default: the embedded model)")
    p.add_argument("--channels", type=int, default=None, help="distill: channels of the real-time net (48)")
    p.add_argument("--blocks", type=int, default=None, help="distill: separable blocks of the real-time net (6)")
    p.add_argument("--task", default=None, choices=["lq2hq", "seg2hq", "hq2clinical"], help="perceptual: which task")
    p.add_argument("--style", default=None, help="perceptual: style image or folder (average style); default the HQ panels")
    p.add_argument("--out-dir", default=None, help="perceptual: run folder (default runs/train)")
    p.add_argument("--out", default=None, help="l1: checkpoint file (default model.pt)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--crop", type=int, default=None, help="perceptual: centre crop (thesis 1000); l1: random crop")
    p.add_argument("--size", type=int, default=None, help="perceptual: resize the crop to this side (CPU runs)")
    p.add_argument("--lr", type=float, default=None, help="default: 1e-5 perceptual (thesis), 2e-3 l1")
    p.add_argument("--content-weight", type=float, default=None, help="thesis: 1e2")
    p.add_argument("--style-weight", type=float, default=None, help="thesis: 5e6 (5e7 for seg2hq)")
    p.add_argument("--pixel-weight", type=float, default=None, help="perceptual: extra L1 to HQ (off in the thesis)")
    p.add_argument("--ssim-weight", type=float, default=None, help="perceptual: extra 1-SSIM to HQ (off in the thesis)")
    p.add_argument("--width", type=int, default=None, help="channels of the first conv (thesis: 32)")
    p.add_argument("--n-residual", type=int, default=None)
    p.add_argument("--no-noise", action="store_true", help="build the net without noise injection")
    p.add_argument("--val-every", type=int, default=None)
    p.add_argument("--ckpt-every", type=int, default=None)
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last_state.pt")
    p.add_argument("--vgg-weights", default=None)
    p.add_argument("--inception-weights", default=None, help="hq2clinical validation FID")
    p.add_argument("--device", default=None, help="cpu (default) or cuda")
    p.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    p.add_argument("--deterministic", action="store_true")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("bench", help="engine latency, end-to-end rate sweep (tcp, ipc) and transport baseline")
    _add_engine_flags(p)
    p.add_argument("--sizes", default="256,512", help="comma-separated square frame sizes")
    p.add_argument("--transports", default="tcp,ipc", help="end to end over these transports")
    p.add_argument("--rates", default=None,
                   help="input rates to sweep, e.g. 15,30,60 (default: around the engine's measured capacity)")
    p.add_argument("--seconds", type=float, default=3.0, help="seconds of stream per rate")
    p.add_argument("--max-drop", type=float, default=0.01, help="fraction of frames allowed not to come out")
    p.add_argument("--messages", type=int, default=300, help="messages per transport-baseline measurement")
    p.add_argument("--engine-only", action="store_true", help="only time the engines, per backend and size")
    p.add_argument("--soak", type=float, default=None, metavar="SECONDS",
                   help="a long run at --fps (first size, first transport): memory and latency per window")
    p.add_argument("--soak-window", type=float, default=30.0, help="seconds per soak window")
    p.add_argument("--fps", type=float, default=30.0, help="soak: input rate")
    p.add_argument("--backends", default="torch,onnxruntime", help="engine-only: backends to compare")
    p.add_argument("--frames", type=int, default=30, help="timed engine-only frames per backend and size")
    p.add_argument("--json", default="usnst-bench.json", help="where to write every figure (JSON)")
    p.add_argument("--plot", default=None, help="also draw the end-to-end latency distribution to this PNG")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("nst", help="optimisation-based style transfer (Gatys) and the thesis variants")
    p.add_argument("--triptych", help="a thesis LQ | HQ | seg image: content and style follow from --task")
    p.add_argument("--content", help="content image")
    p.add_argument("--style", help="style image")
    p.add_argument("--content-seg", help="segmentation of the content (augmented/local variants)")
    p.add_argument("--style-seg", help="segmentation of the style (augmented variant, paired form)")
    p.add_argument("--style-dir", help="folder of style images: use their average style")
    p.add_argument("--average", default="gram", choices=["gram", "features"], help="how --style-dir is averaged")
    p.add_argument("--variant", default="plain", choices=["plain", "augmented", "local"])
    p.add_argument("--task", default="lq2hq", choices=["lq2hq", "seg2hq", "hq2clinical"], help="sets thesis weights")
    p.add_argument("--content-weight", type=float, default=None)
    p.add_argument("--style-weight", type=float, default=None)
    p.add_argument("--lr", type=float, default=5e-3, help="Adam step, in grey levels (0-255)")
    p.add_argument("--iterations", type=int, default=3000)
    p.add_argument("--init", default="content", choices=["content", "noise"])
    p.add_argument("--size", type=int, default=None, help="resize so the longer side is N (CPU runs: 128-256)")
    p.add_argument("--clear-background", action="store_true", help="zero pixels outside the foreground mask")
    p.add_argument("--vgg-weights", default=None, help="torchvision VGG19 state dict, or 'random' (tests only)")
    p.add_argument("--device", default="cpu", help="torch device for the optimisation, e.g. cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output PNG (loss curves and report are written beside it)")
    p.set_defaults(func=cmd_nst)

    p = sub.add_parser("stylize", help="stylize a folder or glob of images with a trained network (resumable, shardable)")
    p.add_argument("inputs", help="folder (recursive) or glob pattern, e.g. 'data/**/*.png'")
    p.add_argument("--out", required=True, help="output folder; input folder structure is kept")
    _add_engine_flags(p)
    p.add_argument("--layout", default="plain", choices=["plain", "triptych", "clinical"],
                   help="triptych: stylize LQ, score against HQ; clinical: crop the brightness bar first")
    p.add_argument("--metrics", action="store_true", help="SSIM/PSNR against paired targets (triptych HQ or --targets)")
    p.add_argument("--targets", default=None, help="folder of targets with the inputs' relative paths")
    p.add_argument("--shard", default="0/1", help="i/n: process every n-th input starting at i")
    p.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    p.add_argument("--dicom-format", default="png", choices=["png", "dicom"],
                   help="DICOM inputs: PNG per frame, or a derived DICOM (new UIDs, same geometry and frame timing)")
    p.set_defaults(func=cmd_stylize)

    p = sub.add_parser("metrics", help="SSIM, PSNR and FID of outputs against paired targets")
    p.add_argument("outputs", help="folder (recursive) or glob of outputs; with --video a sequence (folder, video, DICOM)")
    p.add_argument("--targets", default=None, help="folder of targets with the outputs' relative paths")
    p.add_argument("--video", action="store_true", help="temporal stability (flicker) of a sequence against --input")
    p.add_argument("--input", default=None, help="--video: the input sequence the outputs were stylized from")
    p.add_argument("--targets-layout", default="plain", choices=["plain", "triptych"],
                   help="triptych: the target is the HQ panel of the same-named triptych")
    p.add_argument("--fid", action="store_true", help="also FID over patches (per image and whole set) and set KID")
    p.add_argument("--nakagami", action="store_true", help="also the Nakagami m of outputs and targets (speckle)")
    p.add_argument("--dynamic-range", type=float, default=50.0, help="dB of log compression, to recover envelopes")
    p.add_argument("--inception-weights", default=None, help="torchvision InceptionV3 state dict, or 'random' (tests)")
    p.add_argument("--patch", type=int, default=299, help="FID patch size (thesis: 299)")
    p.add_argument("--csv", default=None, help="write per-image rows here")
    p.add_argument("--json", default=None, help="write rows and summary here")
    p.set_defaults(func=cmd_metrics)

    p = sub.add_parser("engine", help="build engine artifacts for compiled backends")
    engine_sub = p.add_subparsers(dest="engine_command", required=True, metavar="ACTION")
    b = engine_sub.add_parser("build", help="compile a checkpoint for a backend")
    b.add_argument("--model", default=None, help="checkpoint path or embedded name (default: the embedded model)")
    b.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "tensorrt"])
    b.add_argument("--out", required=True, help="artifact path, e.g. model.onnx or model.ep (tensorrt)")
    b.add_argument("--precision", default="fp16", choices=["fp16", "fp32"], help="tensorrt: engine precision")
    b.add_argument("--shapes", default="256x256:512x512:1024x1024",
                   help="tensorrt: frame size HxW, or a range MIN:OPT:MAX of HxW sizes")
    b.add_argument("--device", default="cuda", help="tensorrt: the GPU to build on")
    b.set_defaults(func=cmd_engine_build)

    p = sub.add_parser("view", help="watch input and stylized frames side by side (window and/or video file)")
    p.add_argument("--in", dest="input", default=">tcp://127.0.0.1:5555", help="the simulator's stream")
    p.add_argument("--styled", default=">tcp://127.0.0.1:5556", help="the node's output stream")
    p.add_argument("--out", default=None, help="also write the side-by-side view to this video (.mp4 or .avi)")
    p.add_argument("--no-window", action="store_true", help="no window (headless: needs --out)")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate of the video file")
    p.add_argument("--frames", type=int, default=None, help="stop after this many stylized frames")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.set_defaults(func=cmd_view)

    p = sub.add_parser("clean", help="clean scanner screenshots: keep the imaging region, remove bars, text, calipers")
    p.add_argument("inputs", help="folder (recursive) or glob of screenshots (PNG/JPEG or DICOM)")
    p.add_argument("--out", required=True, help="folder for the cleaned PNGs and cleaning.json")
    p.set_defaults(func=cmd_clean)

    p = sub.add_parser("keys", help="make CURVE key pairs for encrypted, authenticated streams")
    p.add_argument("names", nargs="+", help="one key pair per name, e.g. simulator node viewer")
    p.add_argument("--out", default="keys", help="folder for NAME.key and NAME.key_secret")
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser("info", help="show a checkpoint's config and metadata")
    p.add_argument("--model", default=None, help="checkpoint path or embedded name (default: the embedded model)")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    import zmq

    from engines.backends import BackendUnavailable, EngineMismatch
    from engines.checkpoint import CheckpointError
    from offline.weights import WeightsNotFound
    from usnst_stream.recording import RecordingError
    from usnst_stream.viewer import GuiUnavailable

    try:
        return args.func(args)
    except (CheckpointError, BackendUnavailable, EngineMismatch, RecordingError, WeightsNotFound, OSError,
            ValueError, GuiUnavailable) as exc:
        print(f"usnst {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except zmq.ZMQError as exc:
        print(f"usnst {args.command}: error: ZeroMQ: {exc} (is another process using that endpoint?)", file=sys.stderr)
        return 2
    finally:
        # Flush what publishers still hold (their linger) before the process exits.
        from usnst_stream.security import stop_authenticator

        stop_authenticator(zmq.Context.instance())
        zmq.Context.instance().destroy(linger=1000)

if __name__ == "__main__":
    sys.exit(main())
