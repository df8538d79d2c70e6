"""Engine subcommands: `engine build` (a backend's artifact, through the backend registry), `bench` (latency and
rates), `info` (a checkpoint's config and provenance)."""
from __future__ import annotations

import json

from usnst import flags


# -- engine build ---------------------------------------------------------------------------------------
def engine_flags(p) -> None:
    from usnst.engines.base import PRECISIONS
    from usnst.engines.registry import buildable_backends

    actions = p.add_subparsers(dest="engine_command", required=True, metavar="ACTION")
    b = actions.add_parser("build", help="compile a checkpoint for a backend")
    flags.add_log_flags(b)
    b.add_argument("--model", default=None, help="checkpoint path or embedded name (default: the embedded model)")
    backends = buildable_backends()
    b.add_argument("--backend", default=backends[0], choices=backends, help="which backend's artifact")
    b.add_argument("--out", required=True, help="artifact path, e.g. model.onnx or model.ep (tensorrt)")
    b.add_argument("--precision", default=None, choices=PRECISIONS,
                   help="artifact precision (default: the backend's: fp32 for onnxruntime, fp16 for tensorrt)")
    b.add_argument("--shapes", default=None,
                   help="tensorrt: frame size HxW, or a range MIN:OPT:MAX of HxW sizes (default 256x256:512x512:1024x1024)")
    b.add_argument("--device", default=None, help="tensorrt: the GPU to build on (default cuda)")
    b.add_argument("--sign-key", default=None, metavar="FILE",
                   help="onnxruntime: sign the artifact with this key (`usnst engine key`), so a node given "
                        "--artifact-key can tell it from an edited copy")
    b.add_argument("--overwrite", action="store_true", help="replace an existing artifact")
    b.set_defaults(func=run_engine_build)
    k = actions.add_parser("key", help="make a secret key to sign engine artifacts with")
    flags.add_log_flags(k)
    k.add_argument("--out", required=True, help="key file to write (mode 600; never replaced)")
    k.set_defaults(func=run_engine_key)


def run_engine_build(args) -> int:
    from usnst.engines.onnx_backend import read_key, sign_artifact
    from usnst.engines.registry import BACKENDS, build_artifact
    from usnst_io.media import refuse_existing

    if args.sign_key and args.backend != "onnxruntime":
        raise ValueError("--sign-key signs ONNX artifacts; a tensorrt engine is checked against its checkpoint")
    if args.sign_key:
        read_key(args.sign_key)  # a bad key fails before the build
    refuse_existing(args.out, args.overwrite)
    path = build_artifact(args.model, args.backend, args.out, args.precision, args.shapes, args.device)
    if args.sign_key:
        sign_artifact(path, args.sign_key)
    print(f"usnst engine build: wrote {path} ({BACKENDS[args.backend].builds})"
          + (f", signed with {args.sign_key}" if args.sign_key else ""))
    return 0


def run_engine_key(args) -> int:
    import os
    import secrets

    try:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # private from its first byte
    except FileExistsError:
        raise ValueError(f"{args.out} exists; refusing to replace a key (artifacts signed with it would fail)") from None
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    print(f"usnst engine key: wrote {args.out} (keep it secret; give it to `engine build --sign-key` and to the "
          "nodes' --artifact-key)")
    return 0


# -- bench ----------------------------------------------------------------------------------------------
def bench_flags(p) -> None:
    from usnst.engines.registry import available_backends
    from usnst_stream.bench import BenchPlan

    plan = BenchPlan()
    flags.add_engine_flags(p)
    p.add_argument("--sizes", default=",".join(map(str, plan.sizes)), help="comma-separated square frame sizes")
    p.add_argument("--transports", default=",".join(plan.transports), help="end to end over these transports")
    p.add_argument("--rates", default=None,
                   help="input rates to sweep, e.g. 15,30,60 (default: around the engine's measured capacity)")
    p.add_argument("--duration", dest="seconds", type=flags.positive_float, default=plan.seconds,
                   help="seconds of stream at each rate")
    p.add_argument("--max-drop", type=flags.fraction, default=plan.max_drop, help="fraction of frames allowed not to come out")
    p.add_argument("--messages", type=flags.positive_int, default=plan.messages, help="messages per transport-baseline measurement")
    p.add_argument("--engine-only", action="store_true", help="only time the engines, per backend and size")
    p.add_argument("--soak", type=flags.positive_float, default=None, metavar="SECONDS",
                   help="a long run at --fps (first size, first transport): memory and latency per window")
    p.add_argument("--soak-window", type=flags.positive_float, default=30.0, help="seconds per soak window")
    p.add_argument("--fps", type=flags.rate, default=30.0, help="soak: input rate")
    p.add_argument("--backends", default="torch,onnxruntime",
                   help=f"engine-only: backends to compare (of {', '.join(available_backends())})")
    p.add_argument("--frames", type=flags.positive_int, default=plan.engine_frames, help="timed engine-only frames per backend and size")
    flags.add_json_flag(p, "every figure", default="usnst-bench.json")
    p.add_argument("--plot", default=None, help="also draw the end-to-end latency distribution to this PNG")
    p.set_defaults(func=run_bench)


def run_bench(args) -> int:
    from usnst.engines.checkpoint import load_checkpoint, resolve_model
    from usnst.engines.fast_net import conv_gflops
    from usnst.engines.registry import load_engine
    from usnst_stream import bench

    sizes = [int(v) for v in args.sizes.split(",")]
    net, _ = load_checkpoint(resolve_model(args.model))
    gflop = {s: conv_gflops(net, s, s) for s in sizes}
    curves = {}
    if args.soak:
        result = bench.soak(flags.open_engine(args), sizes[0], args.fps, args.soak, args.soak_window,
                            args.transports.split(",")[0])
        flags.say(args, bench.format_soak(result))
    elif args.engine_only:
        rows = []
        for backend in args.backends.split(","):
            engine = load_engine(args.model, backend, flags.engine_options(args))
            rows += [bench.engine_latency(engine, s, args.frames, gflop=gflop[s]) for s in sizes]
        result = {"machine": bench.machine(), "engine_only": rows}
        flags.say(args, bench.format_engine_table(rows))
    else:
        rates = tuple(float(v) for v in args.rates.split(",")) if args.rates else None
        plan = bench.BenchPlan(sizes=tuple(sizes), transports=tuple(args.transports.split(",")), seconds=args.seconds,
                               rates=rates, engine_frames=args.frames, messages=args.messages, max_drop=args.max_drop,
                               gflop=gflop)
        result, curves = bench.strip_samples(bench.run_bench(flags.open_engine(args), plan))
        flags.say(args, bench.format_report(result))
    flags.emit_json(args, result)
    if args.plot and curves:
        bench.plot_latency_cdf(curves, args.plot)
        flags.say(args, f"usnst bench: wrote {args.plot}")
    return 0


# -- info -----------------------------------------------------------------------------------------------
def info_flags(p) -> None:
    p.add_argument("--model", default=None, help="checkpoint path or embedded name (default: the embedded model)")
    flags.add_json_flag(p, "the same record", default=None)
    p.set_defaults(func=run_info)


def run_info(args) -> int:
    """A checkpoint's config and provenance, as JSON: it is the record itself (``--json PATH`` also writes it). The
    checkpoint is checked as loading would check it, so a damaged file says so here too."""
    from usnst.engines.checkpoint import load_checkpoint, read_checkpoint, resolve_model
    from usnst.engines.registry import checkpoint_stages

    path = resolve_model(args.model)
    payload = read_checkpoint(path)
    load_checkpoint(path)
    checkpoint_stages(path)
    n_params = sum(t.numel() for t in payload["state_dict"].values())
    record = {"path": str(path), "config": payload["config"], "parameters": n_params, "meta": payload["meta"]}
    if args.json in (None, "-"):
        print(json.dumps(record, indent=2, default=str))
    else:
        flags.emit_json(args, record)
    return 0


# -- models ---------------------------------------------------------------------------------------------
def models_flags(p) -> None:
    flags.add_json_flag(p, "the list")
    p.set_defaults(func=run_models)


def headline(name: str) -> dict:
    """A shipped model's own row of its card's realism report (NAME.realism.json beside the checkpoint), if any: the
    row named NAME, else the first named "NAME (…)" — cards that report several seed sets or noise modes put the
    headline (test seeds, the mode the model is judged in) first."""
    from usnst.engines.checkpoint import default_model_path

    path = default_model_path(name).with_suffix(".realism.json")
    if not path.is_file():
        return {}
    rows = json.loads(path.read_text())
    mine = next((r for r in rows if r.get("model") == name), None) or next(
        (r for r in rows if str(r.get("model", "")).startswith(name + " (")), None)
    return {k: mine[k] for k in ("ssim", "lowpass_ssim", "nakagami_m", "fwhm_axial_px", "fwhm_lateral_px", "c2st",
                                 "against") if k in mine} if mine else {}


def run_models(args) -> int:
    from usnst.engines.checkpoint import (
        default_model_path,
        embedded_models,
        read_checkpoint,
    )

    listing = []
    for name in embedded_models():
        payload = read_checkpoint(default_model_path(name))
        meta = payload["meta"]
        realism = headline(name)
        listing.append({"name": name, "task": meta.get("task"), "network": payload["config"].get("arch", "johnson"),
                        "parameters": sum(t.numel() for t in payload["state_dict"].values()),
                        "training": meta.get("training", ""), "realism": realism,
                        "domain": "real frames, held-out makers" if realism.get("against") else "phantom",
                        "card": str(default_model_path(name).with_suffix(".md"))})
    if args.json:
        flags.emit_json(args, listing)
        return 0
    flags.say(args, "| model | task | parameters | measured on | SSIM vs target | low-passed SSIM | Nakagami m | "
                    "FWHM ax/lat px | C2ST |")
    flags.say(args, "|---|---|---|---|---|---|---|---|---|")
    for m in listing:
        r = m["realism"]
        figures = (f"{r['ssim']:.3f} | {r['lowpass_ssim']:.3f} | {r['nakagami_m']:.2f} | "
                   f"{r['fwhm_axial_px']:.2f}/{r['fwhm_lateral_px']:.2f} | {r['c2st']:.2f}") if r else "| | | |"
        flags.say(args, f"| {m['name']} | {m['task']} | {m['parameters']:,} | {m['domain']} | {figures} |")
    flags.say(args, "(phantom: held-out 256x256 phantoms against their HQ — in-domain figures: the LQ→HQ models' "
                    "grain is formed as this phantom forms its HQ, so they say little about real scanners; each "
                    "model's card, engines/default_models/NAME.md, names the domain of every figure)")
    for m in listing:
        if m["realism"].get("against"):
            flags.say(args, f"{m['name']}: against {m['realism']['against']}")
    return 0


# name → (help line, function adding its flags); usnst.cli builds a command's flags only when it runs
COMMANDS = {
    "models": ("list the embedded models with their cards' realism figures", models_flags),
    "engine": ("build engine artifacts for compiled backends", engine_flags),
    "bench": ("engine latency, end-to-end rate sweep (tcp, ipc) and transport baseline", bench_flags),
    "info": ("show a checkpoint's config and metadata", info_flags),
}
