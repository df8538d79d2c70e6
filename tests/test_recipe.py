"""Recipes rebuild a model from nothing (issue 26, item 3): every shipped model has one, each step is a usnst command
(or a named built-in) with the options its --config takes, and the runner resumes an interrupted rebuild."""
import json
from pathlib import Path

import pytest
import tomllib

from usnst.cli import build_parser
from usnst.engines.checkpoint import embedded_models, load_checkpoint
from usnst.recipe import BUILT_IN, argv_of, load, run

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("model", embedded_models())
def test_every_shipped_model_has_a_recipe_whose_steps_parse(model):
    path = ROOT / "recipes" / f"{model}.toml"
    recipe = load(path)
    for step in recipe["steps"]:
        if step["run"] in BUILT_IN:
            continue
        argv = argv_of(step)
        build_parser(argv).parse_args(argv)  # every option the recipe gives is one the command takes
    outputs = [str(s.get("out")) for s in recipe["steps"]]
    assert recipe["model"] in outputs, "the model is what a step makes"


def test_a_tiny_recipe_runs_end_to_end_and_resumes(tmp_path):
    lines = []
    report = run(ROOT / "tests" / "data" / "tiny_recipe.toml", tmp_path, say=lines.append)
    net, meta = load_checkpoint(tmp_path / "tiny.pt")
    assert meta["beam_speckle"]["rays"] == 64 and meta["noise_calibration"] == "noise weights x 0.5"
    assert meta["task"] == "lq2hq" and "squared error" in meta["training"]
    stage = json.loads((tmp_path / "recipe.json").read_text())
    assert [s["run"] for s in stage["steps"]] == ["phantom", "train realism", "train realism", "scale-noise", "speckle"]
    assert all(s["seconds"] is not None for s in report["steps"])
    again = run(ROOT / "tests" / "data" / "tiny_recipe.toml", tmp_path, say=lines.append)
    assert [s.get("skipped", False) for s in again["steps"]] == [False, True, True, True, True]


def test_a_bad_recipe_is_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('model = "x"\nsteps = 3\n')
    with pytest.raises(ValueError, match=r"\[\[steps\]\]"):
        load(bad)
    bad.write_text('[[steps]]\nrun = "phantom"\nout = "d"\n')
    with pytest.raises(ValueError, match="model ="):
        load(bad)
    assert tomllib.loads((ROOT / "recipes" / "lq2hq.toml").read_text())["model"] == "lq2hq.pt"
