"""What every training run shares: the base config of a paired run, the held-out split, batches of random aligned
crops, reproducible per-step randomness, the learning-rate schedule, running a net on uint8 frames, held-out
scoring with the identity baseline (offline.metrics.score_pair), and atomic training-state files.
The trainers (supervised, distill, perceptual) keep only what is their own: the model and the loss."""
from __future__ import annotations

import math
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from usnst.offline.metrics import mean_scores, score_pair
from usnst_io.atomic import atomic_path
from usnst_io.media import to_float, to_uint8


@dataclass
class RunConfig:
    """A paired training run on triptych crops (supervised L1, distillation)."""

    data: str  # folder of LQ | HQ | seg triptychs (``usnst phantom`` writes them)
    out: str = "model.pt"
    steps: int = 400
    batch: int = 8
    crop: int = 128
    lr: float = 2e-3
    val_fraction: float = 0.15
    seed: int = 0
    threads: int | None = None
    progress: bool = True


def split_held_out(samples: list, fraction: float) -> tuple[list, list]:
    """(validation, training): the first ``fraction`` of the samples (at least one when there are two or more)
    are held out; a single sample trains and is not validated."""
    n_val = max(1, round(len(samples) * fraction)) if len(samples) > 1 else 0
    return samples[:n_val], samples[n_val:] or samples


def held_out_by_folder(data: str, fraction: float, read) -> tuple[list, list]:
    """(validation, training) samples of one folder or of several, comma-separated (e.g. phantoms of two image
    formations): each folder's first ``fraction`` held out, so every data set is validated; the held-out samples
    interleaved folder by folder, so a validation that takes the first n still sees each. ``read(folder)`` lists a
    folder's samples."""
    folders = [f for f in data.split(",") if f]
    splits = [split_held_out(read(f), fraction) for f in folders]
    for folder, (val, train) in zip(folders, splits):
        if not train:
            raise ValueError(f"no triptychs in {folder}")
    longest = max(len(v) for v, _ in splits)
    val = [v[i] for i in range(longest) for v, _ in splits if i < len(v)]
    return val, [t for _, train in splits for t in train]


def random_crops(pairs: list[tuple[np.ndarray, ...]], batch: int, crop: int, rng: np.random.Generator):
    """A batch of random aligned crops (with random horizontal flips) as (N, 1, crop, crop) tensors in [0, 1], one
    per array of the tuples (input, target[, mask …]); uint8 arrays are scaled to [0, 1], others kept as they are."""
    crops = [[] for _ in pairs[0]]
    for _ in range(batch):
        arrays = pairs[rng.integers(len(pairs))]
        h, w = arrays[0].shape
        if min(h, w) < crop:
            raise ValueError(f"crop {crop} is larger than a {h}x{w} panel")
        i, j = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
        flip = rng.random() < 0.5
        for out, a in zip(crops, arrays):
            c = a[i:i + crop, j:j + crop]
            out.append(c[:, ::-1] if flip else c)
    to_t = lambda arrs: torch.from_numpy(to_float(np.ascontiguousarray(np.stack(arrs)[:, None])))
    return tuple(to_t(c) for c in crops)


def step_generators(seed: int, step: int, rank: int = 0) -> tuple[np.random.Generator, torch.Generator]:
    """Independent, reproducible randomness for one step of one rank: a run resumed at step s draws exactly what the
    uninterrupted run would have."""
    ss = np.random.SeedSequence([seed, step, rank])
    rng = np.random.default_rng(ss)
    gen = torch.Generator().manual_seed(int(ss.generate_state(1, np.uint64)[0] >> 1))
    return rng, gen


def cosine_schedule(opt: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Cosine decay to zero over ``steps``: a short run still ends on a small learning rate."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))


def optimise(opt: torch.optim.Optimizer, loss: torch.Tensor, sched=None) -> float:
    """One optimiser step on ``loss`` (and the schedule's, if any); returns the loss value."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if sched is not None:
        sched.step()
    return loss.item()


def uint8_runner(net, generator: torch.Generator | None = None, zero_noise: bool = False,
                 device: str | torch.device = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    """uint8 frame → uint8 frame through ``net`` in eval mode: noise from ``generator`` (or zeros)."""
    net.eval()

    def run(frame: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(to_float(frame))[None, None]
            noise = [torch.zeros(s) for s in net.noise_shapes(1, *frame.shape)] if zero_noise else net.make_noise(x, generator)
            y = net(x.to(device), [n.to(device) for n in noise] or None).clamp(0, 1)[0, 0].float().cpu().numpy()
        return to_uint8(y)
    return run


def held_out_scores(pairs, ways: dict[str, Callable[[np.ndarray], np.ndarray]]) -> dict[str, float]:
    """Mean SSIM and PSNR against HQ on whole held-out frames for each named way of turning an input frame into an
    output, keys ``{prefix}ssim`` / ``{prefix}psnr``; the identity (the input itself) is always scored."""
    scores = {}
    for prefix, way in {**ways, "identity_": lambda x: x}.items():
        scores.update(mean_scores([score_pair(way(x), hq) for x, hq in pairs], prefix=prefix))
    return scores


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in sys.argv)


def save_state(path: Path, payload: dict) -> None:
    """A resumable training state (model, optimiser, step …), written atomically."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
