"""The CPU real-time net: any size, checkpoints, ONNX export, FLOP counting, distillation."""
import cv2
import numpy as np
import pytest
import torch

from usnst.engines.base import EngineOptions
from usnst.engines.checkpoint import load_checkpoint, save_checkpoint
from usnst.engines.fast_net import FastNet, FastNetConfig, conv_gflops
from usnst.engines.onnx_backend import OnnxRuntimeEngine, export_onnx
from usnst.engines.registry import load_engine
from usnst.engines.transformer_net import NetConfig, TransformerNet
from usnst.trainer.distill import DistillConfig, distill
from usnst_stream.phantom import PhantomRenderer, write_phantoms


@pytest.mark.parametrize("h, w", [(1, 1), (7, 9), (64, 64), (101, 67)])
def test_any_frame_size_keeps_its_shape(h, w):
    net = FastNet(FastNetConfig(8, 2)).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 1, h, w)).shape == (1, 1, h, w)


def test_a_fresh_fast_net_is_near_identity_and_round_trips(tmp_path):
    torch.manual_seed(0)
    net = FastNet(FastNetConfig(8, 2)).eval()
    path = save_checkpoint(tmp_path / "f.pt", net, {"task": "lq2hq"})
    loaded, _ = load_checkpoint(path)
    assert isinstance(loaded, FastNet) and loaded.config == net.config
    x = torch.rand(1, 1, 24, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


def test_fast_net_runs_on_both_backends_in_agreement(tmp_path):
    torch.manual_seed(1)
    path = save_checkpoint(tmp_path / "f.pt", FastNet(FastNetConfig(8, 2)), {"task": "lq2hq"})
    frame = np.random.default_rng(0).random((37, 50), dtype=np.float32)
    a = load_engine(path, "torch", EngineOptions()).infer(frame)
    b = OnnxRuntimeEngine(export_onnx(path, tmp_path / "f.onnx")).infer(frame)
    assert np.abs(a - b).max() < 1e-4


def test_flop_counter_matches_the_known_cost_of_the_thesis_net():
    # 75.2 GFLOP per 512² frame for the width-32 Johnson net (../shared/REFERENCE.md, counted independently).
    assert conv_gflops(TransformerNet(NetConfig(32, 5)), 512, 512) == pytest.approx(75.2, abs=0.1)
    assert conv_gflops(FastNet(FastNetConfig(48, 6)), 512, 512) < 2.0


def test_distillation_moves_the_student_towards_the_teacher(tmp_path, tiny_checkpoint):
    write_phantoms(tmp_path / "data", 4, 48, 48, seed=3)
    meta = distill(DistillConfig(data=str(tmp_path / "data"), teacher=str(tiny_checkpoint), out=str(tmp_path / "s.pt"),
                                 steps=40, batch=4, crop=32, channels=8, blocks=2, progress=False))
    assert meta["final_l1"] < meta["first_l1"]
    assert set(meta["validation"]) >= {"student_ssim", "teacher_ssim", "identity_ssim"}
    assert isinstance(load_checkpoint(tmp_path / "s.pt")[0], FastNet)


def test_a_noise_injected_student_learns_the_teachers_noise_response(tmp_path):
    """A FastNet teacher with noise: both nets get the same noise, so the student copies what the noise does."""
    torch.manual_seed(0)
    teacher = FastNet(FastNetConfig(8, 1, noise=True, echo_mask=True))
    with torch.no_grad():
        teacher.head.weight[:, 16:].normal_(0, 0.1)  # a teacher that makes speckle from its noise
    teacher_path = save_checkpoint(tmp_path / "t.pt", teacher, {"task": "lq2hq"})
    write_phantoms(tmp_path / "data", 4, 48, 48, seed=3)
    meta = distill(DistillConfig(data=str(tmp_path / "data"), teacher=str(teacher_path), out=str(tmp_path / "s.pt"),
                                 steps=300, batch=4, crop=32, channels=8, blocks=1, lr=1e-2, progress=False))
    assert "same noise" in meta["training"]
    student, _ = load_checkpoint(tmp_path / "s.pt")
    assert student.config.noise and student.config.echo_mask
    x = torch.from_numpy(PhantomRenderer(48, 48, seed=9).render(0.0).lq.astype(np.float32))[None, None]
    n = [torch.randn(1, 1, 48, 48, generator=torch.Generator().manual_seed(7))]
    zero = [torch.zeros(1, 1, 48, 48)]
    with torch.no_grad():
        want, got = teacher(x, n) - teacher(x, zero), student(x, n) - student(x, zero)
    assert got.abs().max() > 0  # a fresh student ignores its noise (zero-initialised noise head); this one uses it
    assert torch.corrcoef(torch.stack([want.ravel(), got.ravel()]))[0, 1] > 0.3  # like the teacher (0.47 measured)


def test_the_embedded_real_time_model_loads_and_runs():
    engine = load_engine("lq2hq_fast", "torch")
    assert engine.describe()["task"] == "lq2hq"
    assert engine.infer(np.full((64, 80), 0.5, np.float32)).shape == (64, 80)  # the whole frame lit: a linear view


@pytest.mark.parametrize("name", ["lq2hq_fast", "lq2hq"])
def test_the_shipped_lq2hq_models_add_a_beam_grain_to_their_nets(name):
    """Both shipped LQ→HQ models record the beam-speckle stage; on a sector frame its grain is there (noise off: the
    base alone is far smoother) and the output stays black outside the fan."""
    renderer = PhantomRenderer(128, 128, seed=9)
    s = renderer.render(0.0)
    speckled = load_engine(name, "torch", EngineOptions(seed=0, threads=1))
    assert speckled.describe()["beam_speckle"]["rays"] > 0
    base = load_engine(name, "torch", EngineOptions(seed=0, threads=1, noise="off")).infer(s.lq)
    out = speckled.infer(s.lq)
    fine = lambda image: np.abs(np.diff(image, axis=1))[s.seg[:, 1:] > 0].mean()
    assert fine(out) > 1.5 * fine(base)
    far_outside = cv2.dilate(renderer.in_sector.astype(np.uint8), np.ones((7, 7), np.uint8)) == 0
    assert far_outside.any() and np.all(out[far_outside] == 0)


def test_a_checkpoint_with_the_removed_speckle_head_is_refused_and_old_keys_are_ignored():
    """Issue 26 (4): the speckle head shipped in no model and went; a file that has one says so in one line, and the
    shipped net's own stored `speckle: false` keys load as before."""
    with pytest.raises(ValueError, match="speckle head, which usnst no longer builds"):
        FastNetConfig.from_dict({"channels": 8, "blocks": 1, "speckle": True})
    assert FastNetConfig.from_dict({"channels": 8, "blocks": 1, "speckle": False, "speckle_psf": "free"}) == \
        FastNetConfig(channels=8, blocks=1)
