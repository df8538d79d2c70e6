"""Recipes: how a shipped model is rebuilt from nothing, as one TOML file the `usnst recipe` command runs.

A recipe is a list of steps, each a usnst command with its options as keys — exactly what that command's
``--config FILE.toml`` takes, ``args`` its positional arguments — plus one step that is not a command: ``scale-noise``
(a trained net's noise weights scaled, as some shipped chains calibrated them). Paths are relative to the work folder, so a run is
self-contained: phantoms, every stage's checkpoint and the final model land there. A step is skipped only when
``recipe.done.json`` records it finished with the same command and no step before it ran again: an output file alone
proves nothing, because a training run writes its best model long before its last step. An unfinished realism stage
resumes from its state file and a phantom folder fills in its missing scenes, so an interrupted rebuild goes on where
it stopped — bit for bit where its training steps run on one thread (`threads = 1`), to float rounding on several;
each step's time goes into ``recipe.json``. The full-size recipe of a model differs from the reduced one only in its values.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import tomllib

BUILT_IN = ("scale-noise",)
DONE = "recipe.done.json"  # step number → the command it finished with


def load(path: str | Path) -> dict:
    try:
        with open(path, "rb") as f:
            recipe = tomllib.load(f)
    except FileNotFoundError:
        raise ValueError(f"recipe {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"recipe {path}: {exc}") from None
    steps = recipe.get("steps")
    if not isinstance(steps, list) or not steps or not all(isinstance(s, dict) and "run" in s for s in steps):
        raise ValueError(f"recipe {path}: expected [[steps]] tables, each with run = \"COMMAND\"")
    if "model" not in recipe:
        raise ValueError(f"recipe {path}: name the step output that is the model: model = \"PATH\"")
    return recipe


def argv_of(step: dict) -> list[str]:
    """The command line a step stands for: its command, then --key value for each option (true: the bare switch;
    a table: TERM=VALUE,…)."""
    argv = [*str(step["run"]).split(), *map(str, step.get("args", []))]
    for key, value in step.items():
        if key in ("run", "creates", "args"):
            continue
        option = "--" + key.replace("_", "-") if len(key) > 1 else "-" + key
        if value is True:
            argv.append(option)
        elif value is False:
            continue
        elif isinstance(value, dict):
            argv += [option, ",".join(f"{k}={v}" for k, v in value.items())]
        else:
            argv += [option, str(value)]
    return argv


def output_of(step: dict) -> str:
    """What a step makes: its ``creates`` (when its outputs are named otherwise), else its ``out``."""
    return str(step.get("creates") or step["out"])


def resumable(step: dict, work: Path) -> list[str] | None:
    """The command that continues an unfinished step from its saved state, or None when it has none (it reruns).
    A realism stage keeps ``OUT.state.pt``; resuming takes the place of its ``init``, which only began the stage."""
    if step["run"] != "train realism":
        return None
    from usnst.trainer.realism import state_path

    if not state_path(work / step["out"]).is_file():
        return None
    return [*argv_of({k: v for k, v in step.items() if k != "init"}), "--resume"]


def scale_noise(model: str, factor: float, out: str) -> None:
    """A net's noise-injection weights times ``factor``: how much grain it makes from its noise."""
    import torch

    from usnst.engines.checkpoint import load_checkpoint, save_checkpoint
    from usnst.engines.fast_net import FastNet

    net, meta = load_checkpoint(model)
    with torch.no_grad():
        if isinstance(net, FastNet):
            net.head.weight[:, net.config.factor ** 2:] *= factor
        else:
            net.noise1.weight.mul_(factor)
            net.noise2.weight.mul_(factor)
    save_checkpoint(out, net, {**meta, "noise_calibration": f"noise weights x {factor:g}"})


def run(path: str | Path, work: str | Path, say=print) -> dict:
    """Every step of the recipe at ``path`` in folder ``work``; returns the timings (also in work/recipe.json)."""
    recipe = load(path)
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    done_file = work / DONE
    done = json.loads(done_file.read_text()) if done_file.is_file() else {}
    timings, total = [], time.monotonic()
    remade = False  # once a step runs, every later one does: its inputs may have changed
    for number, step in enumerate(recipe["steps"], 1):
        label = f"step {number}/{len(recipe['steps'])}: {step['run']}"
        command = " ".join(argv_of(step))
        if not remade and done.get(str(number)) == command and (work / output_of(step)).exists():
            say(f"{label}: {output_of(step)} done, skipped")
            timings.append({"step": number, "run": step["run"], "seconds": None, "skipped": True})
            continue
        # Never finished, after unchanged steps: an interrupted run, continued. Finished before (another command, or
        # inputs made again): started over, so no state of other settings or inputs leaks in.
        interrupted = not remade and str(number) not in done
        remade = True
        argv = (resumable(step, work) if interrupted else None) or argv_of(step)
        if "--resume" not in argv and (work / output_of(step)).is_file():
            (work / output_of(step)).unlink()  # made again from scratch: the old file is stale, never kept by mistake
        say(f"{label} -> {output_of(step)}" + (" (resumed from its state)" if "--resume" in argv else ""))
        t0 = time.monotonic()
        if step["run"] == "scale-noise":
            scale_noise(str(work / step["model"]), float(step["factor"]), str(work / step["out"]))
        else:
            finished = subprocess.run([sys.executable, "-m", "usnst", "-q", *argv], cwd=work)
            if finished.returncode != 0:
                raise RuntimeError(f"{label} failed (exit {finished.returncode}): `usnst {' '.join(argv)}` in {work}")
        timings.append({"step": number, "run": step["run"], "seconds": round(time.monotonic() - t0, 1)})
        done[str(number)] = command
        done_file.write_text(json.dumps(done, indent=2))
    report = {"recipe": str(path), "model": str(work / recipe["model"]), "steps": timings,
              "seconds": round(time.monotonic() - total, 1)}
    (work / "recipe.json").write_text(json.dumps(report, indent=2))
    return report
