"""The `usnst` command: one entry point, one subcommand per job. The subcommands live in usnst/commands/, grouped by
concern (stream, offline, train, engine), each parser beside the function that runs it; this module only assembles
them, sets up logging and turns known errors into one line for the user.

Only the flags of the command being run are built: building them imports what their defaults come from (torch for
the engine and training commands), which a stream command such as `usnst simulate` does without."""
from __future__ import annotations

import argparse
import logging
import signal
import sys

import usnst
from usnst import flags
from usnst.commands import engine, offline, stream, train

GROUPS = (stream, offline, train, engine)
NO_CONFIG = ("keys", "engine", "train", "recipe")  # every other command reads --config FILE.toml (train: each trainer does)


class _DefaultsShown(argparse.HelpFormatter):
    """Each option's help ends with its default, unless the help already states one or there is none to show."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)) \
                or not action.option_strings:
            return text
        default = "x".join(map(str, action.default)) if isinstance(action.default, tuple) else action.default
        return f"{text} (default: {default})"


def _command_named(argv: list[str]) -> str | None:
    """The subcommand in ``argv``: its first word that is not an option."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser with every subcommand listed; the flags of the one ``argv`` names (all when ``argv`` is None)."""
    parser = argparse.ArgumentParser(prog="usnst", description="Real-time neural style transfer for ultrasound simulators.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    parser.add_argument("--version", action="version", version=f"usnst {usnst.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = {name: spec for group in GROUPS for name, spec in group.COMMANDS.items()}
    wanted = None if argv is None else _command_named(argv)
    parser.subcommands = {}
    for name, (help_line, add_flags) in commands.items():
        p = sub.add_parser(name, help=help_line, formatter_class=_DefaultsShown)
        parser.subcommands[name] = p
        flags.add_log_flags(p)  # also accepted after the subcommand
        if argv is None or name == wanted:
            add_flags(p)
            if name not in NO_CONFIG:
                flags.add_config_flag(p)
    return parser


def apply_config_file(parser: argparse.ArgumentParser, argv: list[str], args: argparse.Namespace):
    """``--config FILE.toml``: the file's values become the command's defaults and argv is parsed again, so an
    option given on the command line wins. Unknown keys are an error (a typo must not be ignored silently)."""
    import tomllib

    try:
        with open(args.config, "rb") as f:
            values = tomllib.load(f)
    except FileNotFoundError:
        raise ValueError(f"config file {args.config} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {args.config}: {exc}") from None
    sub = parser.subcommands[args.command]
    if getattr(sub, "trainers", None):  # `usnst train TRAINER`: the trainer's own options
        sub = sub.trainers[args.trainer]
    known = {}  # option name (as typed, without dashes, - or _) or dest → dest
    for action in sub._actions:
        if action.dest in ("help", "config"):
            continue
        known[action.dest] = action.dest
        for option in action.option_strings:
            known[option.lstrip("-").replace("-", "_")] = action.dest
    actions = {a.dest: a for a in sub._actions}
    defaults = {}
    for key, value in values.items():
        dest = known.get(key.replace("-", "_"))
        if dest is None:
            raise ValueError(f"config file {args.config}: unknown option {key!r} for `usnst {args.command}`")
        defaults[dest] = _config_value(actions[dest], key, value, args.config)
    sub.set_defaults(**defaults)
    return parser.parse_args(argv)


def _config_value(action: argparse.Action, key: str, value, path: str):
    """A TOML value as the option means it. A switch takes only true/false (the text "false" would read as on); an
    option whose value is optional (``--json``) takes true for its bare form; any other option takes one value, given
    to argparse as the text a user would type, so it meets the same type check as on the command line."""
    switch = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
    if switch:
        if not isinstance(value, bool):
            raise ValueError(f"config file {path}: {key} is a switch: write {key} = true or {key} = false "
                             f"(got {value!r})")
        return value if isinstance(action, argparse._StoreTrueAction) else not value
    if isinstance(value, bool):
        if action.nargs == "?" and action.const is not None:
            return action.const if value else None
        raise ValueError(f"config file {path}: {key} takes a value, not {str(value).lower()}")
    if isinstance(value, dict) and getattr(action.type, "mapping", False):  # a table of NAME = NUMBER
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, (list, dict)):
        raise ValueError(f"config file {path}: {key} takes one value, not a {'list' if isinstance(value, list) else 'table'}")
    return str(value)


# What an interrupted command (Ctrl-C, SIGTERM) leaves behind, and how to go on; one line instead of a traceback.
ON_INTERRUPT = {
    "stylize": "every output written so far is whole and kept; run the same command again to resume",
    "train": "run the same command with --resume to continue from the last saved state",
    "nst": "outputs finished so far are kept; the image being optimised starts over when run again",
    "metrics": "no report was written; run it again",
    "bench": "no report was written; run it again",
    "phantom": "the triptychs written so far are whole; run it again to write the set",
    "export": "run it again",
}


def _interrupt(signum, _frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    import zmq

    from usnst.engines.base import BackendUnavailable, EngineMismatch
    from usnst.engines.checkpoint import CheckpointError
    from usnst.offline.weights import WeightsNotFound
    from usnst_io.recording import RecordingError
    from usnst_stream.window import GuiUnavailable

    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM ends a command as Ctrl-C does (stream commands set their own)
    try:
        if getattr(args, "config", None):
            args = apply_config_file(parser, argv, args)
            print(f"usnst {args.command}: effective configuration (from {args.config} and the command line):\n"
                  + flags.effective_config(args), file=sys.stderr)
        return args.func(args)
    except KeyboardInterrupt:
        print(f"\nusnst {args.command}: interrupted. {ON_INTERRUPT.get(args.command, 'nothing to resume')}",
              file=sys.stderr)
        return 130
    except (CheckpointError, BackendUnavailable, EngineMismatch, RecordingError, WeightsNotFound, OSError,
            ValueError, GuiUnavailable) as exc:
        print(f"usnst {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except zmq.ZMQError as exc:
        hint = " (is another process using that endpoint?)" if exc.errno == zmq.EADDRINUSE else ""
        print(f"usnst {args.command}: error: ZeroMQ: {exc}{hint}", file=sys.stderr)
        return 2
    finally:
        # Flush what publishers still hold (their linger) before the process exits.
        from usnst_stream.security import stop_authenticator

        stop_authenticator(zmq.Context.instance())
        zmq.Context.instance().destroy(linger=1000)


if __name__ == "__main__":
    sys.exit(main())
