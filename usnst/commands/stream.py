"""Live-stream subcommands: serve (the node), simulate, record, replay, demo, view, keys. Each parser sits beside
the function that runs it; defaults come from the stream package's configs (NodeConfig, DemoConfig, ViewConfig)
and endpoint constants."""
from __future__ import annotations

import itertools
import os
import time

from usnst import flags
from usnst_io import protocol
from usnst_stream.demo import DemoConfig
from usnst_stream.node import NodeConfig
from usnst_stream.sockets import (
    ENDPOINT_HELP,
    SIMULATOR_ENDPOINT,
    STYLIZED_ENDPOINT,
    TRANSPORTS,
    binding,
    connecting,
)
from usnst_stream.viewer import ViewConfig


# -- serve ----------------------------------------------------------------------------------------------
def serve_flags(p) -> None:
    p.add_argument("--in", dest="input", default=NodeConfig.input, help="simulator endpoint; " + ENDPOINT_HELP)
    p.add_argument("--out", dest="output", default=NodeConfig.output,
                   help="output endpoint(s); " + ENDPOINT_HELP + "; igtl://127.0.0.1:18944 serves OpenIGTLink IMAGE messages")
    flags.add_engine_flags(p)
    limits = protocol.Limits()
    p.add_argument("--max-width", type=flags.ranged(int, 1, 16384), default=limits.max_width, help="reject frames wider than this")
    p.add_argument("--max-height", type=flags.ranged(int, 1, 16384), default=limits.max_height, help="reject frames taller than this")
    p.add_argument("--input-topic", default=NodeConfig.input_topic.decode())
    p.add_argument("--output-topic", default=NodeConfig.output_topic.decode())
    p.add_argument("--stats-interval", type=flags.non_negative_float, default=NodeConfig.stats_interval,
                   help="seconds between stats lines (0: none)")
    p.add_argument("--duration", type=flags.positive_float, default=None, help="stop after this many seconds")
    flags.add_json_flag(p, "the final stats")
    p.add_argument("--spacing-mm", type=flags.spacing, default=None, metavar="ROW[,COL]",
                   help="mm per pixel of frames whose meta gives no spacing_mm (a simulator that sends neither a pose "
                        "nor its spacing): the grain keeps a scanner's size in mm, and igtl:// outputs place the "
                        "image by it; refused where it would change neither")
    p.add_argument("--igtl-spacing", type=flags.ranged(float, 0, 1000, above=True), default=None,
                   help=f"igtl:// outputs: the pixel spacing in mm shown for frames that give none, where the grain "
                        f"does not depend on it (default {NodeConfig.igtl_spacing_mm:g}; --spacing-mm sets both)")
    p.add_argument("--metrics", default=None, metavar="[HOST:]PORT",
                   help="serve Prometheus metrics (frames by outcome, rejections by reason, per-stage latency "
                        "histograms, engine info) at http://HOST:PORT/metrics; HOST defaults to 127.0.0.1")
    flags.add_curve_flags(p)
    p.set_defaults(func=run_serve)


def run_serve(args) -> int:
    from usnst.engines.base import sizes_grain_in_mm
    from usnst_stream.igtl_sink import is_igtl
    from usnst_stream.node import Node
    from usnst_stream.sockets import SCHEMES, check_endpoints

    check_endpoints(args.input)  # a typo fails now, not after the engine's warm-up
    check_endpoints(args.output, SCHEMES + ("igtl",))
    igtl = any(is_igtl(e) for e in args.output.split(","))
    if args.igtl_spacing is not None and (args.spacing_mm is not None or not igtl):
        raise ValueError("--igtl-spacing applies to igtl:// outputs of frames without a spacing, and only without "
                         "--spacing-mm (which sets it too): " + ("drop one of them" if igtl else "no igtl:// output"))
    engine = flags.open_engine(args)
    if args.spacing_mm is not None and not (igtl or sizes_grain_in_mm(engine)):
        raise ValueError("--spacing-mm: this model's grain has no size in mm (no beam-speckle stage fitted with its "
                         "sample_mm, or a real scanner's texture) and no igtl:// output shows it, so it would change "
                         "nothing")
    cfg = NodeConfig(input=args.input, output=args.output, limits=protocol.Limits(args.max_width, args.max_height),
                     stats_interval=args.stats_interval, input_topic=args.input_topic.encode(),
                     output_topic=args.output_topic.encode(), curve=flags.curve(args), spacing_mm=args.spacing_mm,
                     igtl_spacing_mm=args.igtl_spacing or NodeConfig.igtl_spacing_mm, metrics=args.metrics)
    node = Node(engine, cfg).start()
    flags.on_signals(node.request_stop)
    flags.say(args, f"usnst serve: {engine.describe()['backend']} engine; subscribing {', '.join(node.endpoints['input'])}; "
          f"publishing {', '.join(node.endpoints['output'])}"
          + (f"; metrics at {node.endpoints['metrics'][0]}" if args.metrics else "") + ". Ctrl-C stops.")
    final = node.run(args.duration)
    flags.say(args, f"usnst serve: stopped. {node.stats.summary_line()}")
    flags.emit_json(args, final)
    return 0


# -- simulate -------------------------------------------------------------------------------------------
def simulate_flags(p) -> None:
    from usnst_stream.phantom import PROBES
    from usnst_stream.sources import QUALITIES

    p.add_argument("--out", dest="output", default=binding(SIMULATOR_ENDPOINT), help=ENDPOINT_HELP)
    p.add_argument("--fps", type=flags.rate, default=30.0)
    p.add_argument("--size", type=flags.size, default=(256, 256), help="N or HxW (default 256)")
    p.add_argument("--quality", default=QUALITIES[0], choices=QUALITIES, help="which rendering to publish")
    p.add_argument("--dtype", default="uint8", choices=list(protocol.DTYPES))
    p.add_argument("--frames", type=flags.positive_int, default=None, help="stop after N frames")
    p.add_argument("--duration", type=flags.positive_float, default=None, help="stop after S seconds")
    p.add_argument("--seed", type=flags.seed, default=0, help="scene seed")
    p.add_argument("--probe", default=None, choices=PROBES,
                   help="probe kind: its usual field of view (default: the phantom's original sector probe)")
    flags.add_phantom_flags(p)
    add_sends_flag(p)
    p.add_argument("--loop-seconds", type=flags.ranged(float, 0, 60), default=4.0,
                   help="render this many seconds of frames before sending and play them in a loop, so rendering "
                        "never makes frames late; 0 renders every frame live")
    flags.add_curve_flags(p)
    p.set_defaults(func=run_simulate)


def run_simulate(args) -> int:
    from usnst_stream.publisher import open_publisher, publish
    from usnst_stream.sources import limited, phantom_stream

    stop = flags.stop_on_signals()
    h, w = args.size
    sock, bound = open_publisher(args.output, curve=flags.curve(args))
    loop = int(round(args.loop_seconds * args.fps))
    if loop:
        print(f"usnst simulate: rendering a {loop}-frame loop ({args.loop_seconds:g} s) ...", flush=True)
    stream = phantom_stream(h, w, args.fps, args.quality, args.seed, args.dtype, loop_frames=loop,
                            probe_kind=args.probe, formation=args.formation, anatomy=args.anatomy, sends=args.sends)
    first = next(stream)  # renders the loop before the clock starts
    print(f"usnst simulate: publishing {args.quality.upper()} {h}x{w} {args.dtype} frames at {args.fps:g} fps on "
          f"{', '.join(bound)}. Ctrl-C stops.", flush=True)
    source = limited(itertools.chain([first], stream), args.frames, args.duration)
    counts = publish(source, sock, stop, stamp=True)
    sock.close()
    print(f"usnst simulate: sent {counts['sent']} frames ({counts['late']} late).", flush=True)
    return 0


def add_sends_flag(p) -> None:
    from usnst_stream.sources import SENDS

    p.add_argument("--sends", default=SENDS[0], choices=SENDS,
                   help="what each frame tells the node of its geometry: its pose and pixel spacing (the grain follows "
                        "the probe exactly), its spacing alone (the motion is estimated from the frames), or nothing "
                        "(estimated motion, the grain at the model's own size): to see what a simulator that cannot "
                        "send its pose gets")


# -- record / replay ------------------------------------------------------------------------------------
def record_flags(p) -> None:
    p.add_argument("--in", dest="input", default=connecting(STYLIZED_ENDPOINT), help=ENDPOINT_HELP)
    p.add_argument("--out", required=True, help="recording file (.usrec); an existing file is refused")
    p.add_argument("--overwrite", action="store_true", help="replace an existing recording file")
    p.add_argument("--topic", default="", help="topic prefix to record (default: all)")
    p.add_argument("--frames", type=flags.positive_int, default=None, help="stop after N messages")
    p.add_argument("--duration", type=flags.positive_float, default=None, help="stop after S seconds")
    flags.add_curve_flags(p)
    p.set_defaults(func=run_record)


def run_record(args) -> int:
    from usnst_stream.recorder import record

    stop = flags.stop_on_signals()
    print(f"usnst record: recording {args.input} to {args.out}. Ctrl-C stops.", flush=True)
    counts = record(args.input, args.out, stop, args.frames, args.duration, args.topic.encode(), curve=flags.curve(args),
                    overwrite=args.overwrite)
    print(f"usnst record: wrote {counts['written']} messages to {counts['path']}; {counts['missing_by_seq']} frames "
          f"missing from the sequence numbers; {counts['invalid']} not valid frames.", flush=True)
    return 0


def replay_flags(p) -> None:
    p.add_argument("source", help="recording file, image folder, video file or DICOM file")
    p.add_argument("--out", dest="output", default=binding(SIMULATOR_ENDPOINT), help=ENDPOINT_HELP)
    p.add_argument("--fps", type=flags.rate, default=None, help="fixed rate instead of the recorded timing")
    p.add_argument("--speed", type=flags.ranged(float, 0, 1000, above=True), default=1.0, help="timing multiplier (2 = twice as fast)")
    p.add_argument("--loop", type=flags.non_negative_int, default=1, help="play N times (0: for ever)")
    p.add_argument("--frames", type=flags.positive_int, default=None, help="stop after N messages")
    p.add_argument("--restamp", action="store_true", help="recordings: set capture_ns to the moment each frame is re-sent (files always are)")
    p.add_argument("--settle", type=flags.ranged(float, 0, 60), default=0.5, help="seconds to wait for subscribers before the first frame")
    flags.add_curve_flags(p)
    p.set_defaults(func=run_replay)


def run_replay(args) -> int:
    from usnst_io import media
    from usnst_stream.publisher import open_publisher, publish
    from usnst_stream.sources import limited, looped, open_source

    stop = flags.stop_on_signals()
    make = lambda: open_source(args.source, args.fps)  # publish() does the restamping, at send time
    if next(iter(make()), None) is None:  # fail now, with a clear message, if there is nothing to send
        raise ValueError(f"nothing to replay in {args.source}: no readable frames (images, video, DICOM, recording)")
    times = None if args.loop == 0 else args.loop
    source = limited(looped(make, times), args.frames)
    sock, bound = open_publisher(args.output, curve=flags.curve(args))
    print(f"usnst replay: publishing {args.source} on {', '.join(bound)}"
          f"{' at ' + format(args.fps, 'g') + ' fps' if args.fps else ' at its recorded timing'}"
          f"{' x' + format(args.speed, 'g') if args.speed != 1 else ''}. Ctrl-C stops.", flush=True)
    time.sleep(args.settle)  # give subscribers a moment to connect before the first frame
    # Files are stamped as each frame is sent; a recording goes byte for byte unless --restamp.
    stamp = args.restamp or media.sequence_kind(args.source) != "recording"
    counts = publish(source, sock, stop, args.speed, stamp=stamp)
    sock.close()
    print(f"usnst replay: sent {counts['sent']} messages ({counts['late']} late).", flush=True)
    return 0


# -- demo -----------------------------------------------------------------------------------------------
def demo_flags(p) -> None:
    from usnst.engines.registry import AUTO, available_backends
    from usnst_stream.phantom import PROBES

    d = DemoConfig()
    p.add_argument("--duration", dest="seconds", type=flags.positive_float, default=d.seconds,
                   help="how long to stream, in seconds")
    p.add_argument("--fps", type=flags.rate, default=d.fps, help="simulator frame rate")
    p.add_argument("--size", type=flags.size, default=(d.height, d.width), help="frame size N or HxW")
    p.add_argument("--model", default=d.model, help="embedded name, checkpoint or artifact (default: the real-time "
                   "model on a CPU)")
    p.add_argument("--backend", default=d.backend, choices=[*available_backends(), AUTO], help="inference backend")
    p.add_argument("--transport", default=d.transport, choices=TRANSPORTS, help="loopback transport")
    p.add_argument("--threads", type=flags.threads, default=os.cpu_count() or 1,
                   help="inference threads; the demo's simulator plays a pre-rendered loop, so inference may use "
                        "every core (at 512²/30 fps on 2 cores: 180/180 frames delivered in 7 of 7 runs with 2 threads)")
    p.add_argument("--loop-seconds", type=flags.ranged(float, 0, 60), default=d.loop_seconds,
                   help="the simulator pre-renders this many seconds and loops them (0: renders live)")
    p.add_argument("--out", default=d.out, help="side-by-side picture to write")
    p.add_argument("--seed", type=flags.seed, default=d.seed, help="scene and noise seed")
    p.add_argument("--probe", default=d.probe, choices=PROBES,
                   help="the phantom's probe kind: its usual field of view (default: its original sector probe)")
    flags.add_phantom_flags(p)
    add_sends_flag(p)
    p.add_argument("--curve", action="store_true",
                   help="encrypt and authenticate both links with CURVE, using key pairs made for this run (what "
                        "`usnst keys` and the --curve-* options of serve, simulate, record and view set up)")
    flags.add_json_flag(p, "the full report")
    p.set_defaults(func=run_demo)


def run_demo(args) -> int:
    from usnst_stream.demo import run_demo as demo

    h, w = args.size
    cfg = DemoConfig(seconds=args.seconds, fps=args.fps, height=h, width=w, model=args.model, backend=args.backend,
                     transport=args.transport, out=args.out, seed=args.seed, threads=args.threads,
                     loop_seconds=args.loop_seconds, curve=args.curve, probe=args.probe, formation=args.formation,
                     anatomy=args.anatomy, sends=args.sends)
    flags.say(args, f"usnst demo: simulator -> node -> consumer over {cfg.transport}{' with CURVE' if cfg.curve else ''} "
              f"on loopback, {h}x{w} frames of the phantom's {cfg.probe or 'sector'} probe ({cfg.formation} "
              f"formation, {cfg.anatomy}; each frame sends {cfg.sends}) at {cfg.fps:g} fps for {cfg.seconds:g} s ...")
    r = demo(cfg)
    node, cons = r["node"], r["consumer"]
    lat = node["latency_ms"]
    e2e = cons["end_to_end_ms"]
    flags.say(args, f"  engine      {r['engine']['backend']} ({r['engine'].get('task') or 'model'}), noise {r['engine']['noise']}")
    flags.say(args, f"  simulator   sent {r['simulator']['sent']} frames at {cfg.fps:g} fps")
    flags.say(args, f"  node        stylized {node['published']} frames ({node['fps_out']:.1f} fps), dropped {node['dropped']} "
          f"to stay current, lost {node['lost']}, rejected {node['rejected']}")
    flags.say(args, f"  latency     inference p50 {lat['infer']['p50']:.1f} ms, p99 {lat['infer']['p99']:.1f} ms; "
          f"queued p50 {lat['wait']['p50']:.1f} ms")
    flags.say(args, f"  end to end  capture -> consumer p50 {e2e['p50']:.1f} ms, p99 {e2e['p99']:.1f} ms, max {e2e['max']:.1f} ms "
          f"({cons['received']} frames received, {cons['fps']:.1f} fps)")
    if "picture" in r:
        flags.say(args, f"  picture     {r['picture']} (input | stylized | high-quality reference)")
    else:
        flags.say(args, "  picture     none: no stylized frame reached the consumer")
    flags.emit_json(args, r)
    return 0 if cons["received"] > 0 else 1


# -- view -----------------------------------------------------------------------------------------------
def view_flags(p) -> None:
    v = ViewConfig()
    p.add_argument("recording", nargs="?", default=None,
                   help="play a recording (.usrec) instead of live streams: a recording of both streams is shown "
                        "side by side, one of a single stream on its own")
    p.add_argument("--in", dest="input", default=v.input, help="the simulator's stream")
    p.add_argument("--styled", default=v.styled, help="the node's output stream")
    p.add_argument("--out", default=v.out, help="also write the side-by-side view to this video (.mp4 or .avi)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing video at --out")
    p.add_argument("--no-window", action="store_true", help="no window (headless: needs --out)")
    p.add_argument("--fps", type=flags.rate, default=v.fps, help="frame rate of the video file")
    p.add_argument("--frames", type=flags.positive_int, default=v.frames, help="stop after this many stylized frames")
    p.add_argument("--duration", type=flags.positive_float, default=v.duration, help="stop after this many seconds")
    flags.add_curve_flags(p)
    p.set_defaults(func=run_view)


def run_view(args) -> int:
    from usnst_io.media import refuse_existing
    from usnst_stream.viewer import Viewer

    if args.out:
        refuse_existing(args.out, args.overwrite)
    cfg = ViewConfig(input=args.input, styled=args.styled, window=not args.no_window, out=args.out, fps=args.fps,
                     frames=args.frames, duration=args.duration, curve=flags.curve(args))
    viewer = Viewer(cfg, live=args.recording is None)
    source = args.recording or f"{args.input} | {args.styled}"
    print(f"usnst view: {source}" + (f" -> {args.out}" if args.out else "") + ". Ctrl-C stops.", flush=True)
    stop = flags.stop_on_signals()
    result = viewer.play(args.recording, stop) if args.recording else viewer.run(stop)
    print(f"usnst view: showed {result['shown']} stylized frames ({result['unpaired']} without their input)"
          + (f"; wrote {args.out}" if args.out and result["shown"] else ""), flush=True)
    return 0


# -- keys -----------------------------------------------------------------------------------------------
def keys_flags(p) -> None:
    p.add_argument("names", nargs="+", help="one key pair per name, e.g. simulator node viewer")
    p.add_argument("--out", default="keys", help="folder for NAME.key and NAME.key_secret")
    p.set_defaults(func=run_keys)


def run_keys(args) -> int:
    from usnst_stream.security import generate_keys

    for name in args.names:
        public, secret = generate_keys(args.out, name)
        print(f"usnst keys: {name}: public {public} (share it), secret {secret} (keep it; mode 600)")
    print("A side that binds lists its allowed clients' public keys in a folder (--curve-allow DIR); a side that "
          "connects names the server's public key (--curve-server FILE); each uses its own --curve-secret.")
    return 0


# name → (help line, function adding its flags); usnst.cli builds a command's flags only when it runs
COMMANDS = {
    "serve": ("stylize a live frame stream (SUB -> engine -> PUB)", serve_flags),
    "simulate": ("publish synthetic B-mode frames like an ultrasound simulator", simulate_flags),
    "record": ("record a frame stream to a crash-safe file", record_flags),
    "replay": ("publish a recording, a folder of images, a video or a DICOM cine", replay_flags),
    "demo": ("simulator -> node -> consumer on loopback, with stats and a picture", demo_flags),
    "view": ("watch input and stylized frames side by side (window and/or video file)", view_flags),
    "keys": ("make CURVE key pairs for encrypted, authenticated streams", keys_flags),
}
