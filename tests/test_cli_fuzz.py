"""Every numeric option of every command, on the command line and in a --config file, refuses 0 (where 0 is not
allowed), negatives, NaN, infinities, huge values and text with one line (issue 25, item 9)."""
import argparse
import contextlib
import io

import pytest

from usnst.cli import apply_config_file, build_parser, main

BAD = ["-1", "nan", "inf", "-inf", "1e30", str(10**30), "abc", "", "0x10"]


def _numeric_options():
    """(command, option, its type) for every option whose value is a number."""
    parser = build_parser(None)
    found = []
    for name, sub in parser.subcommands.items():
        parsers = [(name, sub)]
        for action in sub._actions:  # `engine build` and the like: one level of actions
            if isinstance(action, argparse._SubParsersAction):
                parsers += [(f"{name} {k}", p) for k, p in action.choices.items()]
        for label, p in parsers:
            for action in p._actions:
                if action.type in (int, float):
                    found.append((label, action.option_strings[0], action.type))
                elif hasattr(action.type, "range"):
                    found.append((label, action.option_strings[0], action.type))
    return found


def test_no_numeric_option_takes_a_bare_int_or_float():
    bare = [(c, o) for c, o, t in _numeric_options() if t in (int, float)]
    assert not bare, f"options without a range: {bare}"


def test_every_numeric_option_refuses_invalid_values_in_one_line():
    options = _numeric_options()
    refused = accepted = 0
    for command, option, kind in options:
        _, low, _, above = kind.range
        for text in BAD + ["0"]:
            try:
                kind(text)
            except argparse.ArgumentTypeError as exc:
                refused += 1
                assert "expected" in str(exc) and "\n" not in str(exc)
                continue
            accepted += 1
            assert text == "0" and low == 0 and not above, f"{command} {option} accepted {text!r}"
    assert len(options) >= 90 and refused >= 10 * len(options) - accepted
    print(f"{len(options)} numeric options × {len(BAD) + 1} values: {refused} refused, {accepted} accepted (0 where 0 "
          "means none)")


@pytest.mark.parametrize("argv", [
    ["simulate", "--fps", "0"], ["simulate", "--fps", "inf"], ["replay", "x.usrec", "--speed", "0"],
    ["demo", "--fps", "0"], ["serve", "--threads", "-4"], ["phantom", "--out", "x", "-n", "-5"],
    ["serve", "--igtl-spacing", "nan"], ["serve", "--max-width", "0"], ["record", "--out", "x", "--duration", "-1"],
])
def test_the_testers_command_lines_are_one_line_errors(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err and "expected" in err


def _config(tmp_path, text, command="serve", argv=()):
    path = tmp_path / "c.toml"
    path.write_text(text)
    full = [command, *argv, "--config", str(path)]
    parser = build_parser(full)
    args = parser.parse_args(full)
    return apply_config_file(parser, full, args)


def test_config_values_mean_what_the_options_mean(tmp_path):
    with pytest.raises(ValueError, match="spin is a switch"):
        _config(tmp_path, 'spin = "false"\n')
    assert _config(tmp_path, "spin = false\n").spin is False and _config(tmp_path, "spin = true\n").spin is True
    assert _config(tmp_path, "json = true\n").json == "-"  # the bare form: JSON on stdout
    assert _config(tmp_path, "json = false\n").json is None
    assert _config(tmp_path, 'json = "stats.json"\n').json == "stats.json"
    with pytest.raises(ValueError, match="takes a value"):
        _config(tmp_path, "max_width = true\n")
    with pytest.raises(ValueError, match="takes one value"):
        _config(tmp_path, "max_width = [1, 2]\n")
    with contextlib.redirect_stderr(io.StringIO()) as err, pytest.raises(SystemExit):
        _config(tmp_path, "max_width = 0\n")
    assert "--max-width" in err.getvalue()
    assert _config(tmp_path, "frames = 5\n", "simulate").frames == 5  # --config works beyond serve


def test_python_dash_m_usnst_and_the_version():
    import subprocess
    import sys

    import usnst

    done = subprocess.run([sys.executable, "-m", "usnst", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"usnst {usnst.__version__}" and usnst.__version__


@pytest.mark.parametrize("command", ["nst", "speckle", "simulate", "record", "replay", "view", "export"])
def test_help_and_parsing_do_not_load_torch(command):
    """Issue 25, item 13: `nst --help` and `speckle --help` took ~10 s, importing torch to read their defaults."""
    import subprocess
    import sys

    code = ("import sys; from usnst.cli import build_parser; "
            f"build_parser([{command!r}]).subcommands[{command!r}].format_help(); "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr


def test_the_realism_classifiers_report_progress():
    import numpy as np

    from usnst.offline.realism import C2STBudget, c2st

    rng = np.random.default_rng(0)
    dark, bright = ([rng.integers(lo, lo + 100, (32, 32), dtype=np.uint8) for _ in range(20)] for lo in (0, 155))
    ticks = []
    c2st(dark, bright, C2STBudget(steps=200, repeats=1), tick=ticks.append)  # learnt at the first start
    assert sum(ticks) == 200


def test_one_word_one_meaning_across_commands():
    """Issue 25, item 15: --metrics meant a Prometheus port on serve and an SSIM switch on stylize; --layout and
    --targets-layout, --duration and --seconds named one thing twice; --config and --curve-* were missing on some."""
    parser = build_parser(None)
    options = {name: {o for a in sub._actions for o in a.option_strings} for name, sub in parser.subcommands.items()}
    assert [name for name, opts in options.items() if "--metrics" in opts] == ["serve"]
    assert not [name for name, opts in options.items() if opts & {"--seconds", "--targets-layout"}]
    assert "--score" in options["stylize"] and "--layout" in options["metrics"]
    for name in ("serve", "simulate", "record", "replay", "view"):
        assert {"--curve-secret", "--curve-allow", "--curve-server"} <= options[name], name
    assert "--curve" in options["demo"]
    assert {name for name, opts in options.items() if "--config" not in opts} == {"keys", "engine", "train", "recipe"}
    trainers = parser.subcommands["train"].trainers  # train: each trainer reads its own --config
    assert all("--config" in {o for a in t._actions for o in a.option_strings} for t in trainers.values())
    assert "--json" in options["info"] and "--frames" in options["phantom"]


def test_an_encrypted_demo_runs_end_to_end(tmp_path):
    from usnst_stream.demo import DemoConfig, run_demo

    report = run_demo(DemoConfig(seconds=1.0, fps=10, height=48, width=48, curve=True, out=str(tmp_path / "d.png"),
                                 loop_seconds=0.5))
    assert report["curve"] is True and report["consumer"]["received"] > 0


def _minimal_argv(command: str, sub: argparse.ArgumentParser) -> list[str]:
    """The command with a placeholder for every required argument, so its options can be parsed alone."""
    argv = [command]
    for action in sub._actions:
        if isinstance(action, argparse._SubParsersAction):
            return []  # `engine`: its actions take no --config
        if not action.option_strings and action.dest not in ("help",):
            argv.append("x")
        elif action.required:
            argv += [action.option_strings[0], "x"]
    for group in sub._mutually_exclusive_groups:
        if group.required:
            argv += [group._group_actions[0].option_strings[0], "x"]
    return argv


def test_every_numeric_option_refuses_invalid_values_from_a_config_file(tmp_path):
    """The same refusals through --config FILE.toml, for every command that reads one."""
    parser = build_parser(None)
    refused = 0
    readers = [(command, sub, _minimal_argv(command, sub)) for command, sub in parser.subcommands.items()]
    readers += [(f"train {name}", sub, ["train", name, "--data", "x"])
                for name, sub in parser.subcommands["train"].trainers.items()]
    for command, sub, argv in readers:
        if not argv or "--config" not in {o for a in sub._actions for o in a.option_strings}:
            continue
        keys = [a.option_strings[-1].lstrip("-") for a in sub._actions if hasattr(a.type, "range")]
        for key in keys:
            for value in ('"nan"', '"inf"', "-1", "1e30", '"abc"'):
                path = tmp_path / "c.toml"
                path.write_text(f"{key.replace('-', '_')} = {value}\n")
                full = [*argv, "--config", str(path)]
                command_parser = build_parser(full)
                args = command_parser.parse_args(full)
                with contextlib.redirect_stderr(io.StringIO()) as err, pytest.raises(SystemExit) as info:
                    apply_config_file(command_parser, full, args)
                assert info.value.code == 2 and "expected" in err.getvalue() and "Traceback" not in err.getvalue()
                refused += 1
    assert refused >= 400
    print(f"{refused} invalid config values refused")
