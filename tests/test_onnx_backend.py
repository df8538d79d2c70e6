"""ONNX export and the ONNX Runtime backend: agreement with eager PyTorch, dynamic sizes, artifact checks."""
import numpy as np
import pytest
import torch
from conftest import tiny_net

from usnst.engines.base import EngineOptions
from usnst.engines.checkpoint import file_sha256, load_checkpoint, save_checkpoint
from usnst.engines.onnx_backend import (
    EngineMismatch,
    OnnxRuntimeEngine,
    artifact_checkpoint_sha,
    export_onnx,
)
from usnst.engines.registry import load_engine

TOLERANCE = 1e-4  # max abs difference in [0, 1] output units


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("USNST_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("h, w", [(40, 48), (37, 53), (5, 6), (128, 96)])
def test_onnxruntime_agrees_with_eager_torch_with_identical_noise(tmp_path, tiny_checkpoint, h, w):
    artifact = export_onnx(tiny_checkpoint, tmp_path / "m.onnx")
    engine = OnnxRuntimeEngine(artifact, EngineOptions(seed=3))
    frame = np.random.default_rng(0).random((h, w), dtype=np.float32)
    out = engine.infer(frame)
    # Replay the same noise through the eager model: same seed, same torch generator, same shapes.
    net, _ = load_checkpoint(tiny_checkpoint)
    x = torch.from_numpy(frame)[None, None]
    noise = net.make_noise(x, torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = net(x, noise).clamp(0, 1)[0, 0].numpy()
    assert out.shape == (h, w)
    assert np.abs(out - ref).max() < TOLERANCE


def test_noise_off_agrees_with_the_torch_backend(tmp_path, tiny_checkpoint, cache):
    frame = np.random.default_rng(1).random((33, 44), dtype=np.float32)
    a = load_engine(tiny_checkpoint, "torch", EngineOptions(noise="off")).infer(frame)
    b = load_engine(tiny_checkpoint, "onnxruntime", EngineOptions(noise="off")).infer(frame)
    assert np.abs(a - b).max() < TOLERANCE
    assert len(list(cache.rglob("*.onnx"))) == 1  # exported once into the cache, reused after
    load_engine(tiny_checkpoint, "onnxruntime")
    assert len(list(cache.rglob("*.onnx"))) == 1


def test_an_engine_built_for_one_checkpoint_refuses_another(tmp_path, tiny_checkpoint):
    artifact = export_onnx(tiny_checkpoint, tmp_path / "m.onnx")
    assert artifact_checkpoint_sha(artifact) == file_sha256(tiny_checkpoint)
    other = save_checkpoint(tmp_path / "other.pt", tiny_net(seed=9))
    with pytest.raises(EngineMismatch, match="was built from checkpoint"):
        load_engine(other, "onnxruntime", artifact=artifact)
    engine = load_engine(tiny_checkpoint, "onnxruntime", artifact=artifact)
    assert engine.describe()["checkpoint_sha256"] == file_sha256(tiny_checkpoint)


def test_auto_backend_measures_and_picks_one_that_runs(tiny_checkpoint, cache, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="usnst.engines.registry"):
        engine = load_engine(tiny_checkpoint, "auto")
    assert engine.name in ("torch", "onnxruntime")
    line = next(r.getMessage() for r in caplog.records if "backend auto →" in r.getMessage())
    assert engine.name in line and "torch" in line and "onnxruntime" in line
    assert engine.infer(np.zeros((20, 20), np.float32)).shape == (20, 20)


def test_an_edited_onnx_artifact_is_refused(tmp_path, tiny_checkpoint):
    import onnx
    from onnx import numpy_helper

    artifact = export_onnx(tiny_checkpoint, tmp_path / "m.onnx")
    load_engine(tiny_checkpoint, "onnxruntime", artifact=artifact)  # untouched: accepted
    model = onnx.load(str(artifact))
    weight = model.graph.initializer[0]
    values = numpy_helper.to_array(weight).copy()
    values.flat[0] += 1.0  # one weight changed, metadata (checkpoint hash) left as it was
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    onnx.save(model, str(artifact))
    with pytest.raises(EngineMismatch, match="modified or corrupted"):
        load_engine(tiny_checkpoint, "onnxruntime", artifact=artifact)
    with pytest.raises(EngineMismatch, match="changed after export"):
        load_engine(artifact)  # named alone: the same check


def test_an_onnx_artifact_named_as_the_model_runs_on_its_own_backend(tmp_path, tiny_checkpoint):
    from usnst.engines.base import BackendUnavailable

    artifact = export_onnx(tiny_checkpoint, tmp_path / "m.onnx")
    options = EngineOptions(noise="fixed", seed=5)
    frame = np.random.default_rng(0).random((40, 52), dtype=np.float32)
    alone = load_engine(artifact, options=options)
    with_checkpoint = load_engine(tiny_checkpoint, "onnxruntime", options, artifact)
    assert alone.name == "onnxruntime" and np.array_equal(alone.infer(frame), with_checkpoint.infer(frame))
    # Its checkpoint is not at hand and no key is configured: what it was built from is only claimed.
    assert alone.describe()["claimed_checkpoint_sha256"] == file_sha256(tiny_checkpoint)
    assert "checkpoint_sha256" not in alone.describe() and alone.describe()["verified"] == "no"
    with pytest.raises(BackendUnavailable, match="runs on --backend onnxruntime"):
        load_engine(artifact, "torch")
    with pytest.raises(FileNotFoundError):
        load_engine(tmp_path / "missing.onnx")


def test_threads_do_not_spin_unless_asked_and_results_do_not_depend_on_it(tiny_checkpoint, cache):
    frame = np.random.default_rng(2).random((40, 56), dtype=np.float32)
    quiet = load_engine(tiny_checkpoint, "onnxruntime", EngineOptions(seed=3, threads=2))
    spinning = load_engine(tiny_checkpoint, "onnxruntime", EngineOptions(seed=3, threads=2, spin=True))
    assert quiet.describe()["spin"] is False and spinning.describe()["spin"] is True
    np.testing.assert_array_equal(quiet.infer(frame), spinning.infer(frame))


def _edit_and_restate(artifact, out):
    """What an attacker does: change one weight, then recompute the stored graph hash."""
    import onnx
    from onnx import numpy_helper

    from usnst.engines.onnx_backend import META_GRAPH, graph_sha256

    model = onnx.load(str(artifact))
    weight = model.graph.initializer[0]
    values = numpy_helper.to_array(weight).copy()
    values.flat[0] += 1.0
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    next(p for p in model.metadata_props if p.key == META_GRAPH).value = graph_sha256(model)
    onnx.save(model, str(out))
    return out


def test_an_edited_artifact_with_a_restated_hash_is_caught_by_its_checkpoint(tmp_path, tiny_checkpoint):
    """Issue 25, item 6: integrity is not authenticity. With the checkpoint at hand the artifact is compared with a
    fresh export; alone, it runs but is named by its own hash, never by the checkpoint it claims."""
    import json

    import cv2

    from usnst.offline.stylize import StylizeJob, run_stylize

    artifact = export_onnx(tiny_checkpoint, tmp_path / "m.onnx")
    forged = _edit_and_restate(artifact, tmp_path / "forged.onnx")
    with pytest.raises(EngineMismatch, match="not what .* exports to"):
        load_engine(tiny_checkpoint, "onnxruntime", artifact=forged)
    alone = load_engine(forged)
    assert alone.describe()["verified"] == "no" and "checkpoint_sha256" not in alone.describe()
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.png"), np.full((16, 16), 90, np.uint8))
    run_stylize(alone, StylizeJob(str(tmp_path / "in"), str(tmp_path / "out"), progress=False))
    identity = json.loads((tmp_path / "out" / "usnst-model.json").read_text())
    assert identity["artifact_sha256"] == file_sha256(forged) and "checkpoint_sha256" not in identity


def test_an_artifact_of_an_embedded_model_is_verified_on_its_own(tmp_path):
    from usnst.engines.checkpoint import default_model_path

    artifact = export_onnx(default_model_path("lq2hq_fast"), tmp_path / "fast.onnx")
    described = load_engine(artifact).describe()
    assert described["verified"] == "checkpoint" and described["checkpoint_sha256"] == file_sha256(
        default_model_path("lq2hq_fast"))
    with pytest.raises(EngineMismatch, match="not what .* exports to"):
        load_engine(_edit_and_restate(artifact, tmp_path / "forged.onnx"))


def test_signed_artifacts_with_a_configured_key(tmp_path, tiny_checkpoint, capsys):
    from usnst.cli import main

    key, other = tmp_path / "k.key", tmp_path / "other.key"
    assert main(["engine", "key", "--out", str(key)]) == 0 and main(["engine", "key", "--out", str(other)]) == 0
    assert main(["engine", "key", "--out", str(key)]) == 2  # never replaced
    signed = tmp_path / "signed.onnx"
    assert main(["engine", "build", "--model", str(tiny_checkpoint), "--out", str(signed), "--sign-key", str(key)]) == 0
    described = load_engine(signed, options=EngineOptions(artifact_key=str(key))).describe()
    assert described["verified"] == "signature"
    with pytest.raises(EngineMismatch, match="does not match the artifact key"):
        load_engine(signed, options=EngineOptions(artifact_key=str(other)))
    with pytest.raises(EngineMismatch, match="does not match the artifact key"):
        load_engine(_edit_and_restate(signed, tmp_path / "forged.onnx"), options=EngineOptions(artifact_key=str(key)))
    unsigned = export_onnx(tiny_checkpoint, tmp_path / "unsigned.onnx")
    with pytest.raises(EngineMismatch, match="not signed"):
        load_engine(unsigned, options=EngineOptions(artifact_key=str(key)))
    capsys.readouterr()
    assert main(["stylize", str(tmp_path), "--out", str(tmp_path / "o"), "--artifact-key", str(key)]) == 2
    assert "--model is a checkpoint" in capsys.readouterr().err


def test_a_truncated_onnx_file_is_one_clear_error(tmp_path, tiny_checkpoint):
    artifact = export_onnx(tiny_checkpoint, tmp_path / "m.onnx")
    data = artifact.read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(EngineMismatch, match="not a readable ONNX file"):
        load_engine(tmp_path / "cut.onnx")
