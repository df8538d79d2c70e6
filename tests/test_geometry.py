"""A network's frame geometry is written once (its ``geometry``) and every backend follows it: a net with more noise
planes, or the real-time net with noise, runs the same on eager PyTorch and ONNX Runtime without backend changes."""
import numpy as np
import pytest
import torch
from torch import nn

from usnst.engines.base import EngineOptions
from usnst.engines.body_engine import TorchEagerEngine
from usnst.engines.checkpoint import save_checkpoint
from usnst.engines.fast_net import FastNet, FastNetConfig
from usnst.engines.geometry import FrameGeometry, FrameNet
from usnst.engines.onnx_backend import OnnxRuntimeEngine, export_net, export_onnx
from usnst.engines.registry import load_engine

ODD_SIZES = [(37, 53), (61, 45), (29, 83)]
TOLERANCE = 1e-4


class ThreeNoiseNet(FrameNet):
    """A toy net that takes three noise planes at 1/4, 1/2 and full size: nothing in engines/ knows it."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.down = nn.Conv2d(1, 4, 4, stride=4)
        self.mid = nn.Conv2d(4, 4, 3, padding=1)
        self.out = nn.Conv2d(4, 1, 3, padding=1)
        self.w = nn.Parameter(torch.randn(3, generator=gen) * 0.3)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=gen) * 0.3

    @property
    def geometry(self) -> FrameGeometry:
        return FrameGeometry(4, 8, (4, 2, 1))

    def body(self, x, noise=None):
        y = torch.relu(self.down(x)) + self.w[0] * noise[0]
        y = torch.nn.functional.interpolate(y, scale_factor=2.0) + self.w[1] * noise[1]
        y = torch.nn.functional.interpolate(torch.relu(self.mid(y)), scale_factor=2.0) + self.w[2] * noise[2]
        return x + 0.1 * self.out(y)


def _noisy_fast_net() -> FastNet:
    """The real-time net with its noise plane on and every weight (the noise half of the head included) non-zero."""
    net = FastNet(FastNetConfig(channels=8, blocks=2, noise=True))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return net.eval()


def test_geometry_pads_draws_noise_and_round_trips():
    g = FrameGeometry(4, 8, (2, 1))
    assert g.padded_size(37, 53) == (40, 56) and g.padded_size(3, 5) == (8, 8)
    assert g.pad_mode(37, 53) == "reflect" and g.pad_mode(3, 5) == "replicate"
    assert g.noise_shapes(2, 37, 53) == [(2, 1, 20, 28), (2, 1, 40, 56)]
    assert g.noise_names == ["noise1", "noise2"]
    assert FrameGeometry.from_json(g.to_json()) == g
    x = np.random.default_rng(0).random((37, 53), dtype=np.float32)
    padded = g.pad_numpy(x)
    assert padded.shape == (40, 56)
    assert np.allclose(padded, g.pad(torch.from_numpy(x)[None, None])[0, 0].numpy())
    with pytest.raises(ValueError, match="divide"):
        FrameGeometry(4, 8, (3,))


def test_nets_describe_their_own_geometry():
    from usnst.engines.transformer_net import NetConfig, TransformerNet

    assert TransformerNet(NetConfig(width=4, n_residual=1)).geometry.noise_scales == (2, 1)
    assert TransformerNet(NetConfig(width=4, n_residual=1, noise=False)).geometry.noise_scales == ()
    assert FastNet(FastNetConfig(channels=8, blocks=1, noise=True)).geometry == FrameGeometry(4, 8, (1,))
    assert FastNet(FastNetConfig(channels=8, blocks=1)).geometry.noise_scales == ()


@pytest.mark.parametrize("h, w", ODD_SIZES)
def test_a_net_with_three_noise_planes_runs_on_onnxruntime_as_in_eager_torch(tmp_path, h, w):
    net = ThreeNoiseNet().eval()
    artifact = export_net(net, tmp_path / "three.onnx")
    options = EngineOptions(noise="frame", seed=7)
    frame = np.random.default_rng(h).random((h, w), dtype=np.float32)
    ort = OnnxRuntimeEngine(artifact, options).infer(frame)
    eager = TorchEagerEngine(net, options).infer(frame)
    assert ort.shape == (h, w)
    assert np.abs(ort - eager).max() < TOLERANCE
    silent = TorchEagerEngine(net, EngineOptions(noise="off")).infer(frame)
    assert np.abs(eager - silent).max() > 1e-2  # the noise planes matter, so agreement is not trivial


@pytest.mark.parametrize("h, w", ODD_SIZES)
def test_the_real_time_net_with_noise_exports_and_agrees_with_eager(tmp_path, h, w):
    path = save_checkpoint(tmp_path / "fast_noise.pt", _noisy_fast_net(), {"task": "lq2hq"})
    artifact = export_onnx(path, tmp_path / "fast_noise.onnx")
    options = EngineOptions(noise="frame", seed=3)
    frame = np.random.default_rng(w).random((h, w), dtype=np.float32)
    ort = load_engine(path, "onnxruntime", options, artifact).infer(frame)
    eager = load_engine(path, "torch", options).infer(frame)
    assert np.abs(ort - eager).max() < TOLERANCE
    silent = load_engine(path, "torch", EngineOptions(noise="off")).infer(frame)
    assert np.abs(eager - silent).max() > 1e-2


def test_a_fresh_real_time_net_ignores_its_noise_until_trained():
    net = FastNet(FastNetConfig(channels=8, blocks=1, noise=True)).eval()
    x = torch.rand(1, 1, 24, 32)
    with torch.no_grad():
        a = net(x, net.make_noise(x, torch.Generator().manual_seed(0)))
        b = net(x, [torch.zeros(s) for s in net.noise_shapes(1, 24, 32)])
    assert torch.equal(a, b)


def test_the_realism_johnson_net_exports_with_its_input_skip_and_echo_mask(tmp_path):
    from usnst.engines.transformer_net import NetConfig, TransformerNet

    net = TransformerNet(NetConfig(width=4, n_residual=1, noise=True, echo_mask=True, residual=True))
    with torch.no_grad():
        net.noise2.weight.fill_(0.3)
    path = save_checkpoint(tmp_path / "j.pt", net, {"task": "lq2hq"})
    artifact = export_onnx(path, tmp_path / "j.onnx")
    options = EngineOptions(noise="frame", seed=3)
    frame = np.random.default_rng(0).random((37, 53), dtype=np.float32)
    frame[:, :10] = 0  # no echo: must stay black
    eager = load_engine(path, "torch", options).infer(frame)
    assert np.abs(load_engine(path, "onnxruntime", options, artifact).infer(frame) - eager).max() < TOLERANCE
    assert np.all(eager[:, :7] == 0)
    rebuilt = load_engine(path, "torch", options)
    assert rebuilt.net.config.residual and rebuilt.net.config.echo_mask


def test_fixed_noise_depends_on_seed_and_size_only():
    from usnst.engines.base import NoisePlanes

    fresh = NoisePlanes(EngineOptions(noise="fixed", seed=2)).planes([(1, 1, 8, 12)])[0]
    used = NoisePlanes(EngineOptions(noise="fixed", seed=2))
    used.planes([(1, 1, 16, 16)])  # another size first (a warm-up frame)
    assert torch.equal(used.planes([(1, 1, 8, 12)])[0], fresh)
    assert not torch.equal(NoisePlanes(EngineOptions(noise="fixed", seed=3)).planes([(1, 1, 8, 12)])[0], fresh)
