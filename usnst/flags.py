"""Flags several subcommands share, and the small helpers every command uses. Defaults and choices are read from
the config dataclasses and registries that own them (EngineOptions, the backend registry, the sockets module), so
the command line never states a second value for the same fact."""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import threading

from usnst_io.protocol import Limits

log = logging.getLogger("usnst")


def size(text: str) -> tuple[int, int]:
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
    limits = Limits()
    if h > limits.max_height or w > limits.max_width:  # what a node accepts by default; beyond it, memory runs out
        raise argparse.ArgumentTypeError(f"size must be at most {limits.max_height}x{limits.max_width} "
                                         f"(the frame limit of the wire protocol), got {h}x{w}")
    return h, w


def ranged(kind: type, low: float, high: float = 1e9, above: bool = False):
    """An argparse type: a ``kind`` (int or float) number, finite, at least ``low`` (more than ``low`` with
    ``above``) and at most ``high`` (default 10⁹: beyond it a duration overflows a timer and a count never ends).
    Every numeric option takes one, so 0, negative, NaN, inf and absurd sizes are refused where a value is parsed —
    on the command line and in a --config file alike — with the range in the message, never deep in a run."""
    says = f"{'a whole number' if kind is int else 'a finite number'}"
    says += f" {'above' if above else 'of at least'} {low:g} and at most {high:g}"

    def parse(text: str):
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {says}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (above and value == low) or value > high:
            raise argparse.ArgumentTypeError(f"expected {says}, got {text!r}")
        return value

    parse.__name__ = says  # argparse names the type in some messages
    parse.range = (kind, low, high, above)  # for the fuzz test: what the option accepts
    return parse


positive_float = ranged(float, 0, above=True)  # durations, rates, learning rates
non_negative_float = ranged(float, 0)  # weights, intervals where 0 means none
fraction = ranged(float, 0, 1)
rate = ranged(float, 0, 10_000, above=True)  # frames per second, speed-ups
positive_int = ranged(int, 1)  # counts
non_negative_int = ranged(int, 0)  # counts where 0 means none or for ever
seed = ranged(int, 0, 2**63 - 1)
threads = ranged(int, 1, 1024)
side = ranged(int, 8, 8192)  # an image side in pixels


def on_signals(action) -> None:
    """SIGINT/SIGTERM call ``action`` so long-running commands finish cleanly and print their summary."""

    def handler(signum, _frame):
        log.info("received %s, stopping", signal.Signals(signum).name)
        action()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def stop_on_signals() -> threading.Event:
    stop = threading.Event()
    on_signals(stop.set)
    return stop


def given(args, names) -> dict:
    """The flags the user actually gave (not None), so a config dataclass's own defaults apply to the rest."""
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def add_log_flags(p: argparse.ArgumentParser) -> None:
    """-v/-q after a subcommand (or its action) too; SUPPRESS keeps a value given before it."""
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="warnings and errors only")


def add_json_flag(p: argparse.ArgumentParser, what: str, default: str | None = None) -> None:
    """``--json PATH`` writes ``what`` there; ``--json`` alone (or ``-``) prints it on stdout, and every human line of
    the command then goes to stderr, so stdout is valid JSON for a pipe. The same meaning in every command."""
    p.add_argument("--json", nargs="?", const="-", default=default, metavar="PATH",
                   help=f"write {what} as JSON to PATH; without PATH (or '-'): to stdout, other output to stderr")


def say(args, text: str = "") -> None:
    """A line for the user: stdout, or stderr when stdout carries the JSON."""
    print(text, file=sys.stderr if getattr(args, "json", None) == "-" else sys.stdout, flush=True)


def emit_json(args, payload) -> None:
    """The command's JSON, where ``--json`` said (nothing without it)."""
    if not getattr(args, "json", None):
        return
    text = json.dumps(payload, indent=2, default=str)
    if args.json == "-":
        print(text, flush=True)
    else:
        from pathlib import Path

        Path(args.json).write_text(text + "\n")
        say(args, f"wrote {args.json}")


def spacing(text: str) -> tuple[float, float]:
    """An argparse type: a pixel spacing in mm, ``ROW,COL`` or one number for square pixels, each finite, above 0
    and at most 100."""
    parts = str(text).split(",")
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected ROW,COL or one number of mm per pixel, got {text!r}")
    one = ranged(float, 0, 100, above=True)
    row, col = (one(part.strip()) for part in (parts[0], parts[-1]))
    return row, col


def add_config_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, metavar="FILE.toml",
                   help="read this command's options from a TOML file (keys: the long option names, with - or _); "
                        "options given on the command line win; the effective configuration is printed at start")


def effective_config(args, skip=("func", "command", "config", "verbose", "quiet")) -> str:
    """The options a command runs with, as TOML a user can save and pass back with --config."""
    lines = []
    for key, value in sorted(vars(args).items()):
        if key in skip or value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, dict):  # TERM=WEIGHT options (train realism --loss): as the command line takes them
            text = json.dumps(",".join(f"{k}={v:g}" for k, v in value.items()))
        elif isinstance(value, (int, float)):
            text = repr(value)
        elif isinstance(value, tuple) and all(isinstance(v, int) for v in value):  # a size (h, w)
            text = json.dumps("x".join(map(str, value)))
        elif isinstance(value, tuple) and all(isinstance(v, float) for v in value):  # a spacing (row, column)
            text = json.dumps(",".join(map(repr, value)))
        else:
            text = json.dumps(str(value))
        lines.append(f"{key} = {text}")
    return "\n".join(lines)


def add_engine_flags(p: argparse.ArgumentParser) -> None:
    from usnst.engines.base import NOISE_MODES, PRECISIONS, EngineOptions
    from usnst.engines.checkpoint import DEFAULT_MODEL
    from usnst.engines.registry import AUTO, available_backends

    p.add_argument("--model", default=None, help="embedded model name (`usnst models`), checkpoint path, or engine "
                   f"artifact (.onnx, .ep: runs on its own backend) (default: {DEFAULT_MODEL})")
    p.add_argument("--backend", default=None, choices=[*available_backends(), AUTO],
                   help=f"inference backend (default: an artifact's own backend; for a checkpoint {AUTO}, the "
                        "fastest of the backends that run here, timed at start)")
    p.add_argument("--engine", default=None, help="prebuilt engine artifact (usnst engine build); checked against --model")
    p.add_argument("--noise", default=EngineOptions.noise, choices=NOISE_MODES,
                   help="noise injection: fixed per stream (a still scene stays still), fresh every frame, or off "
                        f"(default {EngineOptions.noise})")
    p.add_argument("--seed", type=seed, default=EngineOptions.seed, help="seed of the injected noise (reproducible outputs)")
    p.add_argument("--threads", type=threads, default=default_threads(),
                   help="CPU threads for inference; the default, half the cores, leaves the rest to a simulator on "
                        "the same machine (an engine using every core next to a busy simulator ran 45x slower)")
    p.add_argument("--spin", action="store_true",
                   help="let ONNX Runtime's idle threads spin-wait: ~1-2 ms faster when the node has the cores to "
                        "itself, but at 30 fps it burns ~50%% more CPU, which a simulator on the same machine needs")
    p.add_argument("--device", default=EngineOptions.device, help="cpu or cuda[:N] (tensorrt always runs on cuda)")
    p.add_argument("--precision", default=EngineOptions.precision, choices=PRECISIONS,
                   help="fp16 on GPU only; norms stay fp32")
    p.add_argument("--artifact-key", default=None, metavar="FILE",
                   help="engine artifacts must carry a signature made with this key (`usnst engine build --sign-key`); "
                        "default: the file named by $USNST_ARTIFACT_KEY, if set")


def default_threads() -> int:
    """Inference threads when none are given: half the cores (at least one), so a simulator rendering on the same
    machine keeps its share — oversubscribed cores made eager PyTorch 595 ms per 256² frame instead of 13 ms."""
    return max(1, (os.cpu_count() or 2) // 2)


def engine_options(args):
    from usnst.engines.base import EngineOptions
    from usnst.engines.onnx_backend import KEY_ENV
    from usnst.engines.registry import artifact_backend

    if args.artifact_key and not (artifact_backend(args.model) or getattr(args, "engine", None)):
        raise ValueError("--artifact-key checks engine artifacts; --model is a checkpoint and no --engine is given")
    return EngineOptions(noise=args.noise, seed=args.seed, threads=args.threads, device=args.device,
                         precision=args.precision, spin=args.spin,
                         artifact_key=args.artifact_key or os.environ.get(KEY_ENV) or None)


def open_engine(args):
    """The engine the engine flags describe."""
    from usnst.engines.registry import load_engine

    return load_engine(args.model, cli_backend(args), engine_options(args), args.engine)


def cli_backend(args) -> str | None:
    """--backend as the command line means it: given, or the artifact's own, or auto (measured) for a checkpoint."""
    from usnst.engines.registry import AUTO, artifact_backend

    if args.backend:
        return args.backend
    if getattr(args, "engine", None):
        return artifact_backend(args.engine)  # a checkpoint with its prebuilt artifact runs on that artifact's backend
    return None if artifact_backend(args.model) else AUTO


def add_phantom_flags(p: argparse.ArgumentParser) -> None:
    """How the phantom forms its frames and what it shows (usnst phantom, simulate, demo)."""
    from usnst_stream.phantom import ANATOMIES, FORMATIONS

    p.add_argument("--formation", default=FORMATIONS[0], choices=FORMATIONS,
                   help="how echoes become the image: gaussian (a Gaussian PSF on complex scatterers: every shipped "
                        "model's training data) or rf (RF pulses with a carrier, Hilbert envelope, a focused beam with "
                        "side lobes, frequency-dependent attenuation: usnst_stream.rf_formation)")
    p.add_argument("--anatomy", default=ANATOMIES[0], choices=ANATOMIES,
                   help="the scene: fetal (a fetal head in amniotic fluid) or abdominal (liver, vessels, kidney)")


def add_curve_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("CURVE encryption and authentication (keys from `usnst keys`)")
    g.add_argument("--curve-secret", default=None, help="this side's NAME.key_secret; turns CURVE on")
    g.add_argument("--curve-allow", default=None, help="where this side binds: folder of allowed clients' NAME.key")
    g.add_argument("--curve-server", default=None, help="where this side connects: the server's NAME.key")


def curve(args):
    from usnst_stream.security import CurveConfig

    if not args.curve_secret:
        if args.curve_allow or args.curve_server:
            raise ValueError("--curve-allow/--curve-server need --curve-secret (this side's NAME.key_secret)")
        return None
    return CurveConfig(args.curve_secret, args.curve_allow, args.curve_server)
