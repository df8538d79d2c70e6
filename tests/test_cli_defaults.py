"""The command line states no fact of its own: its defaults and choices are the config dataclasses' and registries'."""
import subprocess
import sys

import pytest

from usnst.cli import build_parser
from usnst.engines.base import NOISE_MODES, EngineOptions
from usnst.engines.registry import BACKENDS, build_artifact, buildable_backends
from usnst.offline.nst_config import VARIANTS, NSTConfig
from usnst.offline.tasks import TASKS
from usnst_stream.demo import DemoConfig
from usnst_stream.node import NodeConfig
from usnst_stream.viewer import ViewConfig


def _parse(*argv):
    return build_parser(list(argv)).parse_args(list(argv))


def _choices(command: str, dest: str, trainer: str | None = None):
    parser = build_parser([command])
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    if trainer:
        sub = sub.trainers[trainer]
    return next(a for a in sub._actions if a.dest == dest).choices


def test_stream_defaults_are_the_configs():
    serve = _parse("serve")
    node, options = NodeConfig(), EngineOptions()
    assert (serve.input, serve.output, serve.stats_interval) == (node.input, node.output, node.stats_interval)
    assert (serve.noise, serve.seed, serve.device, serve.precision) == (options.noise, options.seed, options.device,
                                                                        options.precision)
    demo, d = _parse("demo"), DemoConfig()
    assert (demo.seconds, demo.fps, demo.size, demo.backend, demo.transport) == (d.seconds, d.fps, (d.height, d.width),
                                                                                d.backend, d.transport)
    view, v = _parse("view"), ViewConfig()
    assert (view.input, view.styled) == (v.input, v.styled)
    assert _parse("simulate").output == "@" + node.input.lstrip(">")  # the simulator binds where the node connects
    assert _parse("record", "--out", "x.usrec").input == ">" + node.output.lstrip("@")


def test_choices_are_the_registries():
    assert set(_choices("serve", "noise")) == set(NOISE_MODES)
    assert set(_choices("serve", "backend")) == set(BACKENDS) | {"auto"}
    assert set(_choices("nst", "variant")) == set(VARIANTS)
    assert set(_choices("nst", "task")) == set(TASKS) and _parse("nst", "--out", "o.png").task == NSTConfig().task
    assert set(_choices("train", "task", "perceptual")) == set(TASKS)
    assert set(_choices("train", "task", "realism")) == {name for name, t in TASKS.items() if t.paired}


def test_engine_build_goes_through_the_registry():
    args = _parse("engine", "build", "--out", "m.onnx")
    assert args.backend == buildable_backends()[0] and set(buildable_backends()) == {"onnxruntime", "tensorrt"}
    from usnst.engines.base import BackendUnavailable

    with pytest.raises(BackendUnavailable, match="builds nothing ahead of time"):
        build_artifact(None, "torch", "x")
    with pytest.raises(BackendUnavailable, match="fp32"):
        build_artifact(None, "onnxruntime", "x.onnx", precision="fp16")


def test_stream_commands_start_without_importing_torch():
    code = ("import sys; from usnst.cli import build_parser; "
            "[build_parser([c]).parse_args([c] + a) for c, a in (('simulate', []), ('replay', ['x']), ('view', []))]; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
