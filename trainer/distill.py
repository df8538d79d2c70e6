"""Distillation of a full transform net into the CPU real-time net (engines/fast_net.py).

The student learns to reproduce the teacher's output (L1) on random crops of the training inputs; the teacher runs
with its noise planes at zero, so the target is its deterministic part. Validation compares both against HQ on whole
held-out frames, which is the figure the engines issue asks for (student within 0.02 SSIM of the teacher).
"""
from __future__ import annotations

import math
import shlex
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from engines.checkpoint import load_checkpoint, resolve_model, save_checkpoint
from engines.fast_net import FastNet, FastNetConfig
from offline.datasets import read_triptych_folder
from trainer.supervised import _crops, held_out_scores


@dataclass
class DistillConfig:
    data: str
    teacher: str | None = None  # checkpoint; None: the embedded default
    out: str = "fast.pt"
    steps: int = 600
    batch: int = 8
    crop: int = 128
    lr: float = 2e-3
    channels: int = 48
    blocks: int = 6
    val_fraction: float = 0.15
    seed: int = 0
    progress: bool = True


def _run(net, x):
    return net(x, [torch.zeros(s) for s in net.noise_shapes(*x.shape[:1], *x.shape[-2:])] or None).clamp(0, 1)


def evaluate(student, teacher, pairs) -> dict:
    """Held-out SSIM/PSNR of student, teacher and identity against HQ (noise off for both nets)."""
    def way(net):
        return lambda lq: np.rint(_run(net, torch.from_numpy(lq.astype(np.float32) / 255)[None, None])[0, 0]
                                  .numpy() * 255).astype(np.uint8)
    return held_out_scores(pairs, {"student_": way(student), "teacher_": way(teacher)})


def distill(cfg: DistillConfig) -> dict:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    teacher_path = resolve_model(cfg.teacher)
    teacher, teacher_meta = load_checkpoint(teacher_path)
    pairs = [(s.lq, s.hq) for s in read_triptych_folder(cfg.data)]
    n_val = max(1, round(len(pairs) * cfg.val_fraction)) if len(pairs) > 1 else 0
    val, train_pairs = pairs[:n_val], pairs[n_val:] or pairs
    student = FastNet(FastNetConfig(cfg.channels, cfg.blocks))
    opt = torch.optim.Adam(student.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / cfg.steps)))
    losses, t0 = [], time.monotonic()
    bar = tqdm(range(cfg.steps), desc="distill", unit="step", disable=not cfg.progress)
    for _ in bar:
        x, _ = _crops(train_pairs, cfg.batch, cfg.crop, rng)
        with torch.no_grad():
            target = _run(teacher, x)
        loss = F.l1_loss(student(x), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(l1=f"{np.mean(losses[-20:]):.4f}")
    student.eval()
    scores = evaluate(student, teacher, val) if val else {}
    meta = {"task": teacher_meta.get("task", "lq2hq"), "training": "distilled (L1 to teacher output, teacher noise off)",
            "teacher": str(teacher_path), "training_data": f"{len(train_pairs)} triptychs from {cfg.data}",
            "config": asdict(cfg), "command": " ".join(shlex.quote(a) for a in sys.argv), "steps": cfg.steps,
            "first_l1": float(np.mean(losses[:20])), "final_l1": float(np.mean(losses[-20:])),
            "train_seconds": time.monotonic() - t0, "validation": scores}
    save_checkpoint(cfg.out, student, meta)
    return meta
