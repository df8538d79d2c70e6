"""The thesis' three tasks and the weights it fixes for each, in one table: what the network's input is, whether a
paired target exists, and the loss weights of optimisation NST (Gatys) and of perceptual-loss training (Johnson).
Every tool reads its task defaults from here and lets the user override them."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    name: str
    source: str  # the triptych panel the network reads: "lq", "seg" or "hq"
    paired: bool  # HQ is the target of the same scene (LQ→HQ, Seg→HQ); HQ→Clinical has only a style set
    nst_content_weight: float  # Gatys NST (content, style) weights, thesis tables
    nst_style_weight: float
    content_weight: float = 1e2  # perceptual-loss training
    style_weight: float = 5e6


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("lq2hq", "lq", True, 1e5, 1e-2),
    Task("seg2hq", "seg", True, 1e5, 1e-1, style_weight=5e7),
    Task("hq2clinical", "hq", False, 5e5, 1e-2),
)}
DEFAULT_TASK = "lq2hq"


def task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]
