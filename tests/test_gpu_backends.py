"""torch.compile and TensorRT backends. The CPU parts (shape ranges, fp16 surgery, artifact records, torch.compile on
CPU, clear refusals) run everywhere; building and running TensorRT engines needs CUDA + torch-tensorrt and is
skipped elsewhere with the reason."""
import json

import numpy as np
import pytest
import torch
from conftest import tiny_net

from usnst.engines.base import (
    BackendUnavailable,
    EngineMismatch,
    EngineOptions,
    check_device,
)
from usnst.engines.checkpoint import CheckpointError, save_checkpoint
from usnst.engines.registry import load_engine
from usnst.engines.tensorrt_backend import (
    Fp32InstanceNorm,
    ShapeRange,
    engine_record,
    half_with_fp32_norms,
    sidecar_path,
    verify_artifact,
)

try:
    import torch_tensorrt  # noqa: F401

    HAVE_TRT = torch.cuda.is_available()
    WHY_NO_TRT = "" if HAVE_TRT else "torch-tensorrt is installed but no CUDA GPU is visible"
except ImportError:
    HAVE_TRT, WHY_NO_TRT = False, "torch-tensorrt is not installed (pip install usnst[tensorrt], NVIDIA GPU)"
needs_trt = pytest.mark.skipif(not HAVE_TRT, reason=WHY_NO_TRT)


def test_shape_ranges_parse_static_and_ranges_and_refuse_nonsense():
    static = ShapeRange.parse("512x384")
    assert static.static and static.opt == (512, 384) and str(static) == "512x384"
    r = ShapeRange.parse("256x256:512x512:1000x1000")
    assert not r.static and r.contains(700, 300) and not r.contains(1001, 500) and not r.contains(255, 300)
    assert r.padded(tiny_net().geometry).max == (1000, 1000)  # already a multiple of 4
    assert ShapeRange.parse("37x53").padded(tiny_net().geometry).opt == (40, 56)
    for bad in ("512", "axb", "512x512:256x256:1024x1024", "1x2:3x4", "0x5"):
        with pytest.raises(ValueError):
            ShapeRange.parse(bad)


def test_fp16_copy_keeps_instance_norms_in_fp32_and_stays_close_to_fp32():
    net = tiny_net()
    half = half_with_fp32_norms(net)
    norms = [m for m in half.modules() if isinstance(m, Fp32InstanceNorm)]
    assert len(norms) == sum(isinstance(m, torch.nn.InstanceNorm2d) for m in net.modules()) >= 5
    assert all(p.dtype == torch.float32 for n in norms for p in n.parameters())
    assert half.conv1.conv.weight.dtype == torch.float16 and net.conv1.conv.weight.dtype == torch.float32
    x = torch.rand(1, 1, 32, 40)
    noise = [torch.randn(s) for s in net.noise_shapes(1, 32, 40)]
    with torch.no_grad():
        ref = net(x, noise)
        out = half(x.half(), [n.half() for n in noise])
    assert out.dtype == torch.float16
    assert (out.float() - ref).abs().max() < 2e-2


def test_engine_record_refuses_other_checkpoint_modified_artifact_precision_and_gpu(tmp_path, tiny_checkpoint):
    artifact = tmp_path / "m.ep"
    artifact.write_bytes(b"stand-in for a compiled program")
    gpu = {"gpu": "NVIDIA H100", "compute_capability": "9.0"}
    sidecar_path(artifact).write_text(json.dumps(engine_record(tiny_checkpoint, artifact, "fp16",
                                                               ShapeRange.parse("512x512"), gpu)))
    assert verify_artifact(artifact, tiny_checkpoint, "fp16", gpu)["shapes"]["opt"] == [512, 512]
    other = save_checkpoint(tmp_path / "other.pt", tiny_net(seed=5))
    with pytest.raises(EngineMismatch, match="built from checkpoint"):
        verify_artifact(artifact, other, "fp16", gpu)
    with pytest.raises(EngineMismatch, match="fp16 engine, fp32 was asked"):
        verify_artifact(artifact, tiny_checkpoint, "fp32", gpu)
    with pytest.raises(EngineMismatch, match="built for NVIDIA H100"):
        verify_artifact(artifact, tiny_checkpoint, "fp16", {"gpu": "NVIDIA A10", "compute_capability": "8.6"})
    artifact.write_bytes(b"stand-in for a compiled program, tampered")
    with pytest.raises(EngineMismatch, match="modified or corrupted"):
        verify_artifact(artifact, tiny_checkpoint, "fp16", gpu)
    sidecar_path(artifact).unlink()
    with pytest.raises(EngineMismatch, match="not a usnst TensorRT engine"):
        verify_artifact(artifact, tiny_checkpoint, "fp16", gpu)


@pytest.mark.skipif(HAVE_TRT, reason="this machine can run TensorRT")
def test_tensorrt_is_refused_here_with_its_reason_never_replaced(tiny_checkpoint):
    with pytest.raises(BackendUnavailable, match="torch-tensorrt is not installed|no CUDA GPU"):
        load_engine(tiny_checkpoint, "tensorrt")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_gpu_only_options_are_refused_on_cpu_with_the_reason():
    with pytest.raises(BackendUnavailable, match="sees no CUDA GPU"):
        check_device(EngineOptions(device="cuda"))
    with pytest.raises(BackendUnavailable, match="fp16 inference is for GPUs"):
        check_device(EngineOptions(precision="fp16"))


def test_torch_compile_agrees_with_eager_including_the_noise(tiny_checkpoint):
    frame = np.random.default_rng(2).random((37, 50), dtype=np.float32)
    eager = load_engine(tiny_checkpoint, "torch", EngineOptions(seed=4))
    compiled = load_engine(tiny_checkpoint, "torch-compile", EngineOptions(seed=4))
    for _ in range(2):  # same generator order → same noise planes frame after frame
        a, b = eager.infer(frame), compiled.infer(frame)
        assert b.shape == (37, 50) and np.abs(a - b).max() < 1e-4
    assert compiled.describe()["backend"] == "torch-compile"


@needs_trt
@pytest.mark.parametrize("precision, tolerance", [("fp32", 2e-3), ("fp16", 3e-2)])
def test_tensorrt_engine_agrees_with_eager_and_is_reloaded_without_rebuilding(tmp_path, tiny_checkpoint,
                                                                              precision, tolerance):
    from usnst.engines.tensorrt_backend import build_tensorrt

    artifact = build_tensorrt(tiny_checkpoint, tmp_path / "m.ep", precision, "32x32:64x64:128x128")
    engine = load_engine(tiny_checkpoint, "tensorrt", EngineOptions(noise="off", precision=precision, device="cuda"),
                         artifact=artifact)
    eager = load_engine(tiny_checkpoint, "torch", EngineOptions(noise="off", device="cuda"))
    for h, w in ((64, 64), (37, 101), (128, 32)):
        frame = np.random.default_rng(h).random((h, w), dtype=np.float32)
        assert np.abs(engine.infer(frame) - eager.infer(frame)).max() < tolerance
    with pytest.raises(ValueError, match="outside this TensorRT engine's sizes"):
        engine.infer(np.zeros((200, 64), np.float32))
    noisy = load_engine(tiny_checkpoint, "tensorrt", EngineOptions(seed=1, precision=precision, device="cuda"),
                        artifact=artifact)
    frame = np.full((64, 64), 0.5, np.float32)
    assert np.abs(noisy.infer(frame) - noisy.infer(frame)).max() > 1e-3  # noise is an input: it changes per frame


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "torch-compile"])
def test_fixed_noise_keeps_a_static_input_static_and_frame_noise_does_not(tiny_checkpoint, backend, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setenv("USNST_CACHE", str(tmp_path / "cache"))
    frame = np.random.default_rng(5).random((24, 28), dtype=np.float32)
    fixed = load_engine(tiny_checkpoint, backend, EngineOptions(noise="fixed", seed=1))
    a, b = fixed.infer(frame), fixed.infer(frame)
    assert np.array_equal(a, b)
    assert fixed.infer(np.zeros((16, 20), np.float32)).shape == (16, 20)  # a new size draws its own planes
    per_frame = load_engine(tiny_checkpoint, backend, EngineOptions(noise="frame", seed=1))
    c, d = per_frame.infer(frame), per_frame.infer(frame)
    assert np.abs(c - d).max() > 1e-3
    np.testing.assert_allclose(a, c, atol=1e-4)  # same seed: the fixed planes are the first per-frame draw


def test_a_tensorrt_record_carries_its_stage_so_the_checkpoint_need_not_be_read(tmp_path, tiny_checkpoint):
    """Issue 26 (5): a TensorRT artifact found its beam-speckle stage only while its checkpoint was on disk."""
    from usnst.engines.beam_speckle import META_KEY, BeamSpeckleConfig
    from usnst.engines.registry import artifact_stages

    artifact = tmp_path / "m.ep"
    artifact.write_bytes(b"stand-in for a compiled program")
    stage = {META_KEY: BeamSpeckleConfig(rays=64, samples=96).to_dict()}
    record = engine_record(tiny_checkpoint, artifact, "fp16", ShapeRange.parse("512x512"),
                           {"gpu": "NVIDIA H100", "compute_capability": "9.0"}, stages=stage)
    record["checkpoint"] = "/gone/model.pt"  # the checkpoint is not here any more
    sidecar_path(artifact).write_text(json.dumps(record))
    assert artifact_stages(str(artifact)) == stage
    record["stages"] = {META_KEY: {"rays": 10**6}}
    sidecar_path(artifact).write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="beam-speckle stage is invalid"):
        artifact_stages(str(artifact))
