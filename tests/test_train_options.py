"""The training commands do what they say (issue 26, item 2): each trainer shows only its own options, and every
option it accepts either changes the run or is refused with the reason — none is ignored."""
import argparse
import ast
import dataclasses
from pathlib import Path

import pytest

from usnst.cli import build_parser
from usnst.commands.train import TRAINERS

ROOT = Path(__file__).resolve().parents[1]
SKIP = {"help", "verbose", "quiet", "config", "data"}


def _trainer_parser(name: str) -> argparse.ArgumentParser:
    return build_parser(["train", name]).subcommands["train"].trainers[name]


def _other_value(action: argparse.Action, current):
    """A valid value for ``action`` other than the run's current one, as command-line text."""
    if action.choices:
        return next(c for c in action.choices if c != current)
    kind = getattr(action.type, "range", None)
    if action.dest == "loss":
        return "anatomy=2,mse=1"
    if kind:
        number, low, high, above = kind
        for candidate in (3, 5, 16, 64, 0.5, 2, 1, 0):
            value = number(candidate)
            ok = (value > low if above else value >= low) and value <= high and value != current
            if ok and not (action.dest == "skip_kernel" and value % 2 == 0):
                return str(value)
    return "elsewhere"  # paths and names


@pytest.mark.parametrize("trainer", list(TRAINERS))
def test_every_option_of_a_trainer_changes_its_run_or_is_refused(trainer, tmp_path):
    parser = _trainer_parser(trainer)
    full = build_parser(["train", trainer])
    config_of = TRAINERS[trainer][2]
    base = ["train", trainer, "--data", str(tmp_path)]
    default = config_of(full.parse_args(base))
    walked = ignored = refused = 0
    for action in parser._actions:
        if action.dest in SKIP or not action.option_strings:
            continue
        option = action.option_strings[-1]
        if action.nargs == 0:
            argv = [*base, option]
        else:
            argv = [*base, option, _other_value(action, getattr(default, action.dest, None))]
        args = full.parse_args(argv)
        walked += 1
        try:
            changed = config_of(args)
        except ValueError as exc:
            assert "\n" not in str(exc) and str(exc)
            refused += 1
            continue
        if dataclasses.asdict(changed) == dataclasses.asdict(default):
            ignored += 1
            pytest.fail(f"usnst {' '.join(argv)}: accepted and changed nothing")
    assert walked >= 9 and ignored == 0


@pytest.mark.parametrize("trainer", list(TRAINERS))
def test_a_trainer_lists_at_most_25_options(trainer):
    options = [a for a in _trainer_parser(trainer)._actions if a.option_strings and a.dest not in SKIP]
    assert len(options) <= 25, [a.option_strings[-1] for a in options]


def test_every_field_of_the_realism_config_is_read_by_the_trainer():
    """The other half of "not ignored": what reaches the config is used by the trainer that reads it."""
    from usnst.trainer.realism import RealismConfig

    source = (ROOT / "trainer" / "realism.py").read_text() + (ROOT / "trainer" / "base.py").read_text()
    read = {node.attr for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Attribute)}
    unread = [f.name for f in dataclasses.fields(RealismConfig) if f.name not in read]
    assert not unread, unread


def test_a_gpu_run_trains_on_the_gpu_or_is_refused_here(tmp_path):
    """--device cuda once trained on the CPU without a word."""
    import torch

    from usnst.trainer.realism import RealismConfig, train
    from usnst_stream.phantom import write_phantoms

    write_phantoms(tmp_path / "data", 3, 48, 48, seed=3)
    cfg = RealismConfig(data=str(tmp_path / "data"), out=str(tmp_path / "m.pt"), channels=8, blocks=1, steps=2,
                        batch=2, crop=32, val_fraction=0.0, device="cuda", progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA GPU"):
            train(cfg)
        pytest.skip("no CUDA GPU here: refused with the reason, as it must be")
    r = train(cfg)
    state = torch.load(tmp_path / "m.state.pt", map_location="cpu", weights_only=True)
    assert r["steps"] == 2 and state["step"] == 2
