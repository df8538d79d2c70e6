"""Transform network and checkpoint files."""
import numpy as np
import pytest
import torch
from conftest import TINY, tiny_net

from usnst.engines.base import BackendUnavailable, EngineOptions
from usnst.engines.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from usnst.engines.registry import load_engine
from usnst.engines.transformer_net import NetConfig, TransformerNet


@pytest.mark.parametrize("h, w", [(1, 1), (5, 7), (33, 18), (64, 64), (101, 67)])
def test_any_frame_size_keeps_its_shape(h, w):
    net = tiny_net()
    with torch.no_grad():
        y = net(torch.rand(2, 1, h, w))
    assert y.shape == (2, 1, h, w) and torch.isfinite(y).all()


def test_noise_is_an_input_seeded_noise_is_reproducible_and_visible():
    net = tiny_net()
    x = torch.rand(1, 1, 20, 28)
    shapes = net.noise_shapes(1, 20, 28)
    assert shapes == [(1, 1, 10, 14), (1, 1, 20, 28)]
    with torch.no_grad():
        a = net(x, net.make_noise(x, torch.Generator().manual_seed(3)))
        b = net(x, net.make_noise(x, torch.Generator().manual_seed(3)))
        c = net(x, net.make_noise(x, torch.Generator().manual_seed(4)))
        zero = net(x, [torch.zeros(s) for s in shapes])
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a, zero)


def test_fresh_noise_layers_start_silent():
    net = TransformerNet(TINY).eval()
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        a = net(x, net.make_noise(x, torch.Generator().manual_seed(1)))
        b = net(x, [torch.zeros(s) for s in net.noise_shapes(1, 16, 16)])
    assert torch.equal(a, b)


def test_net_without_noise_has_no_noise_inputs():
    net = TransformerNet(NetConfig(width=4, n_residual=1, noise=False))
    assert net.noise_shapes(1, 16, 16) == []
    assert not any("noise" in n for n, _ in net.named_parameters())


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    net = tiny_net(seed=5)
    path = save_checkpoint(tmp_path / "m.pt", net, {"task": "lq2hq", "training_data": "unit test"})
    loaded, meta = load_checkpoint(path)
    assert loaded.config == net.config
    assert meta["task"] == "lq2hq" and meta["training_data"] == "unit test"
    assert meta["code_version"] and meta["created"]
    x = torch.rand(1, 1, 24, 24)
    noise = [torch.randn(s) for s in net.noise_shapes(1, 24, 24)]
    with torch.no_grad():
        assert torch.equal(net(x, noise), loaded(x, noise))
    assert not list(tmp_path.glob(".*usnst-tmp*"))


def test_checkpoint_holds_only_plain_data(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", tiny_net())
    payload = torch.load(path, weights_only=True)
    assert set(payload) == {"format", "format_version", "config", "state_dict", "meta"}


def test_non_checkpoints_are_refused_with_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a loadable"):
        read_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not a usnst checkpoint"):
        read_checkpoint(other)


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "usnst-checkpoint", "x": Evil()}, path)
    with pytest.raises(CheckpointError, match="not a loadable"):
        read_checkpoint(path)


def test_engine_output_is_in_range_and_noise_modes_behave(tiny_checkpoint):
    frame = np.random.default_rng(0).random((20, 30), dtype=np.float32)
    a = load_engine(tiny_checkpoint, "torch", EngineOptions(seed=1)).infer(frame)
    b = load_engine(tiny_checkpoint, "torch", EngineOptions(seed=1)).infer(frame)
    assert a.shape == frame.shape and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert np.array_equal(a, b)  # same seed, same output
    off = load_engine(tiny_checkpoint, "torch", EngineOptions(noise="off"))
    assert np.array_equal(off.infer(frame), off.infer(frame))  # no noise: deterministic per frame
    with pytest.raises(BackendUnavailable, match="unknown backend"):
        load_engine(tiny_checkpoint, "nonesuch")


def test_embedded_default_model_loads_and_runs():
    engine = load_engine(None)
    desc = engine.describe()
    assert desc["task"] == "lq2hq" and len(desc["checkpoint_sha256"]) == 64
    out = engine.infer(np.full((40, 48), 0.5, np.float32))
    assert out.shape == (40, 48)


def test_a_learned_skip_starts_as_the_plain_skip_and_is_a_filter_once_trained(tmp_path):
    """skip_kernel: the residual skip becomes a k×k filter, the identity at first (a net without one gives the same
    output), one the checkpoint keeps and an ONNX export carries; a changed filter changes the output."""
    from dataclasses import replace

    from usnst.engines.onnx_backend import export_onnx

    plain = replace(TINY, residual=True)
    a = tiny_net(config=plain)
    b = TransformerNet(replace(plain, skip_kernel=5)).eval()
    weights = {**b.state_dict(), **a.state_dict()}  # a's weights, b's own (identity) skip
    b.load_state_dict(weights)
    x = torch.rand(1, 1, 24, 32)
    noise = a.make_noise(x, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(a(x, noise), b(x, noise), atol=1e-6)
        b.skip.conv.weight.mul_(0.5)  # the skip now halves the input: the output drops by about half the frame
        drop = (a(x, noise) - b(x, noise)).mean().item()
    assert abs(drop - 0.5 * x.mean().item()) < 0.05
    save_checkpoint(tmp_path / "m.pt", b, {"task": "lq2hq"})
    loaded, _ = load_checkpoint(tmp_path / "m.pt")
    assert loaded.config.skip_kernel == 5 and torch.equal(loaded.skip.conv.weight, b.skip.conv.weight)
    frame = x[0, 0].numpy()
    eager = load_engine(tmp_path / "m.pt", "torch", EngineOptions(noise="off")).infer(frame)
    onnx = load_engine(tmp_path / "m.pt", "onnxruntime", EngineOptions(noise="off"),
                       artifact=export_onnx(tmp_path / "m.pt", tmp_path / "m.onnx")).infer(frame)
    assert np.abs(eager - onnx).max() < 1e-4
    with pytest.raises(ValueError, match="skip_kernel"):
        TransformerNet(replace(TINY, residual=False, skip_kernel=3))
