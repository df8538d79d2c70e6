"""ONNX export and the ONNX Runtime backend: agreement with eager PyTorch, dynamic sizes, artifact checks."""
import numpy as np
import pytest
import torch
from conftest import tiny_net

from engines.base import EngineOptions
from engines.checkpoint import file_sha256, load_checkpoint, save_checkpoint
from engines.onnx_backend import (
    EngineMismatch,
    OnnxRuntimeEngine,
    artifact_checkpoint_sha,
    export_onnx,
)
from engines.registry import load_engine

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

    with caplog.at_level(logging.INFO, logger="engines.registry"):
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
    from engines.base import BackendUnavailable

    artifact = export_onnx(tiny_checkpoint, tmp_path / "m.onnx")
    options = EngineOptions(noise="fixed", seed=5)
    frame = np.random.default_rng(0).random((40, 52), dtype=np.float32)
    alone = load_engine(artifact, options=options)
    with_checkpoint = load_engine(tiny_checkpoint, "onnxruntime", options, artifact)
    assert alone.name == "onnxruntime" and np.array_equal(alone.infer(frame), with_checkpoint.infer(frame))
    assert alone.describe()["checkpoint_sha256"] == file_sha256(tiny_checkpoint)
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
