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
    assert all(s.get("skipped") for s in again["steps"])  # each recorded finished with the same command


def test_an_interrupted_stage_resumes_from_its_state_and_a_written_model_is_not_taken_for_done(tmp_path):
    """A training run writes its best model long before its last step (a session cut mid-stage left one): the
    recipe continues that stage from its state, and the result equals an uninterrupted rebuild's bit for bit."""
    import torch

    recipe = ROOT / "tests" / "data" / "tiny_recipe.toml"
    run(recipe, tmp_path / "straight", say=lambda line: None)
    cut = tmp_path / "cut.toml"  # the second stage stopped after 1 of its 3 steps, as a killed run leaves it
    cut.write_text(recipe.read_text().replace("steps = 3\nval_every = 3", "steps = 1\nval_every = 1"))
    work = tmp_path / "resumed"
    run(cut, work, say=lambda line: None)
    done = json.loads((work / "recipe.done.json").read_text())
    (work / "recipe.done.json").write_text(json.dumps({k: v for k, v in done.items() if int(k) < 3}))
    assert (work / "runs" / "b" / "model.pt").is_file()  # the output exists, yet the stage is not finished
    lines = []
    again = run(recipe, work, say=lines.append)
    assert [s.get("skipped", False) for s in again["steps"]] == [True, True, False, False, False]
    assert any("step 3/5" in line and "resumed from its state" in line for line in lines)
    a = torch.load(tmp_path / "straight" / "runs" / "b" / "model.state.pt", weights_only=True)
    b = torch.load(work / "runs" / "b" / "model.state.pt", weights_only=True)
    assert a["step"] == b["step"] == 3
    assert all(torch.equal(a["generator"][k], b["generator"][k]) for k in a["generator"])


def test_a_bad_recipe_is_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('model = "x"\nsteps = 3\n')
    with pytest.raises(ValueError, match=r"\[\[steps\]\]"):
        load(bad)
    bad.write_text('[[steps]]\nrun = "phantom"\nout = "d"\n')
    with pytest.raises(ValueError, match="model ="):
        load(bad)
    assert tomllib.loads((ROOT / "recipes" / "lq2hq.toml").read_text())["model"] == "lq2hq.pt"
