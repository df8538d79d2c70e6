"""Distillation of a full transform net into the CPU real-time net (engines/fast_net.py).

The student learns to reproduce the teacher's output (L1) on random crops of the training inputs; the teacher runs
with its noise planes at zero, so the target is its deterministic part. Validation compares both against HQ on whole
held-out frames, which is the figure the engines issue asks for (student within 0.02 SSIM of the teacher).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm import tqdm

from engines.checkpoint import load_checkpoint, resolve_model, save_checkpoint
from engines.fast_net import FastNet, FastNetConfig
from offline.datasets import read_triptych_folder
from offline.losses import pixel_loss
from trainer.base import (
    RunConfig,
    command_line,
    cosine_schedule,
    held_out_scores,
    optimise,
    random_crops,
    split_held_out,
    uint8_runner,
)


@dataclass
class DistillConfig(RunConfig):
    out: str = "fast.pt"
    steps: int = 600
    teacher: str | None = None  # checkpoint; None: the embedded default
    channels: int = FastNetConfig.channels
    blocks: int = FastNetConfig.blocks


def _run(net, x):
    return net(x, [torch.zeros(s) for s in net.noise_shapes(*x.shape[:1], *x.shape[-2:])] or None).clamp(0, 1)


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
    pairs = [(s.lq, s.hq) for s in read_triptych_folder(cfg.data)]
    val, train_pairs = split_held_out(pairs, cfg.val_fraction)
    student = FastNet(FastNetConfig(cfg.channels, cfg.blocks))
    opt = torch.optim.Adam(student.parameters(), lr=cfg.lr)
    sched = cosine_schedule(opt, cfg.steps)
    losses, t0 = [], time.monotonic()
    bar = tqdm(range(cfg.steps), desc="distill", unit="step", disable=None if cfg.progress else True)
    for _ in bar:
        x, _ = random_crops(train_pairs, cfg.batch, cfg.crop, rng)
        with torch.no_grad():
            target = _run(teacher, x)
        losses.append(optimise(opt, pixel_loss(student(x), target), sched))
        bar.set_postfix(l1=f"{np.mean(losses[-20:]):.4f}")
    student.eval()
    scores = evaluate(student, teacher, val) if val else {}
    meta = {"task": teacher_meta.get("task", "lq2hq"), "training": "distilled (L1 to teacher output, teacher noise off)",
            "teacher": str(teacher_path), "training_data": f"{len(train_pairs)} triptychs from {cfg.data}",
            "config": asdict(cfg), "command": command_line(), "steps": cfg.steps,
            "first_l1": float(np.mean(losses[:20])), "final_l1": float(np.mean(losses[-20:])),
            "train_seconds": time.monotonic() - t0, "validation": scores}
    save_checkpoint(cfg.out, student, meta)
    return meta
