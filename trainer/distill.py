"""Distillation of a transform net into a (smaller) CPU real-time net (engines/fast_net.py).

The student learns to reproduce the teacher's output (L1) on random crops of the training inputs. With ``noise``
the student carries a noise plane and the echo mask, and when its noise planes have the teacher's shapes (a FastNet
teacher) both nets are fed the *same* noise: the teacher's noise → speckle mapping is then a deterministic target
the student can learn, so a realism-trained net shrinks without losing its speckle (a realism fine-tune,
``usnst train --loss realism --init``, then repairs what the smaller net could not copy). Otherwise the teacher runs
with its noise planes at zero and the target is its deterministic part. Validation compares both against HQ on
whole held-out frames (noise off), the figure the engines issue asks for (student within 0.02 SSIM of the teacher).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm import tqdm

from usnst.engines.checkpoint import load_checkpoint, resolve_model, save_checkpoint
from usnst.engines.fast_net import FastNet, FastNetConfig
from usnst.offline.datasets import read_triptych_folder
from usnst.offline.losses import pixel_loss
from usnst.trainer.base import (
    RunConfig,
    command_line,
    cosine_schedule,
    held_out_by_folder,
    held_out_scores,
    optimise,
    random_crops,
    uint8_runner,
)


@dataclass
class DistillConfig(RunConfig):
    out: str = "fast.pt"
    steps: int = 600
    teacher: str | None = None  # checkpoint; None: the embedded default
    channels: int = FastNetConfig.channels
    blocks: int = FastNetConfig.blocks
    noise: bool | None = None  # student with a noise plane and the echo mask (None: if the teacher takes noise)


def _zero_noise(net, x) -> list[torch.Tensor] | None:
    return [torch.zeros(s) for s in net.noise_shapes(*x.shape[:1], *x.shape[-2:])] or None


def shares_noise(student, teacher, size: int = 64) -> bool:
    """Whether the two nets take noise planes of the same shapes (so one draw can feed both)."""
    shapes = student.noise_shapes(1, size, size)
    return bool(shapes) and shapes == teacher.noise_shapes(1, size, size)


def evaluate(student, teacher, pairs) -> dict:
    """Held-out SSIM/PSNR of student, teacher and identity against HQ (noise off for both nets)."""
    return held_out_scores(pairs, {"student_": uint8_runner(student, zero_noise=True),
                                   "teacher_": uint8_runner(teacher, zero_noise=True)})


def distill(cfg: DistillConfig) -> dict:
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    teacher_path = resolve_model(cfg.teacher)
    teacher, teacher_meta = load_checkpoint(teacher_path)
    val, train_pairs = held_out_by_folder(cfg.data, cfg.val_fraction,
                                          lambda f: [(s.lq, s.hq) for s in read_triptych_folder(f)])
    noise = bool(teacher.noise_shapes(1, 64, 64)) if cfg.noise is None else cfg.noise
    student = FastNet(FastNetConfig(cfg.channels, cfg.blocks, noise=noise, echo_mask=noise))
    shared = shares_noise(student, teacher)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(student.parameters(), lr=cfg.lr)
    sched = cosine_schedule(opt, cfg.steps)
    losses, t0 = [], time.monotonic()
    bar = tqdm(range(cfg.steps), desc="distill", unit="step", disable=None if cfg.progress else True)
    for _ in bar:
        x, _ = random_crops(train_pairs, cfg.batch, cfg.crop, rng)
        noise = student.make_noise(x, gen) if shared else None
        with torch.no_grad():
            target = teacher(x, noise or _zero_noise(teacher, x)).clamp(0, 1)
        losses.append(optimise(opt, pixel_loss(student(x, noise or _zero_noise(student, x)), target), sched))
        bar.set_postfix(l1=f"{np.mean(losses[-20:]):.4f}")
    student.eval()
    scores = evaluate(student, teacher, val) if val else {}
    meta = {"task": teacher_meta.get("task", "lq2hq"), "training": "distilled (L1 to teacher output, " + ("the same noise fed to both)" if shared
                                                                           else "teacher noise off)"),
            "teacher": str(teacher_path), "training_data": f"{len(train_pairs)} triptychs from {cfg.data}",
            "config": asdict(cfg), "command": command_line(), "steps": cfg.steps,
            "first_l1": float(np.mean(losses[:20])), "final_l1": float(np.mean(losses[-20:])),
            "train_seconds": time.monotonic() - t0, "validation": scores}
    save_checkpoint(cfg.out, student, meta)
    return meta
