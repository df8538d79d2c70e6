"""The realism trainer's loss terms, declared once: each row names a term, computes it from a batch, says what it
needs, its default weight and why it is there. The training loop is the weighted sum over this table; the command
line's options (``--NAME-weight``), their help, the guards, the description stored in checkpoints and the columns of
the training log all come from it. A new term is a row here and its function in offline.losses.

Only terms a shipped model's recipe uses are here (their cards say what each bought); others live in git history.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from usnst.offline.losses import (
    RandomFilterTexture,
    anatomy_loss,
    brightness_loss,
    correlation_loss,
    local_histogram_loss,
    lsgan_generator_loss,
    nakagami_loss,
    pixel_loss,
)

TISSUE = "tissue"  # the scene's label map, for tissue masks (paired triptychs have one)
DISCRIMINATOR = "discriminator"  # a PatchGAN trained beside the generator
FILTERS = "random filters"  # the fixed random filter bank of the texture loss


@dataclass
class Batch:
    """What one training step gives the terms: the net's output for inputs ``x``; ``y`` their aligned HQ crops;
    ``tissue`` the tissue mask of the crops; the discriminator's judgement of the output, and the texture network."""

    fake: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    tissue: torch.Tensor
    judged: Callable[[], torch.Tensor]  # the discriminator's scores of ``fake`` (computed only if a term asks)
    texture: RandomFilterTexture
    correlation_lags: int


@dataclass(frozen=True)
class Term:
    name: str
    weight: float  # default
    needs: frozenset[str]
    label: str  # what the checkpoint's description and the card call it
    why: str  # the option's help: one line
    loss: Callable[[Batch], torch.Tensor]
    settings: tuple[str, ...] = ()  # the run's options that only this term reads (refused while it is off)

    @property
    def option(self) -> str:
        return f"--{self.name.replace('_', '-')}-weight"


TERMS: tuple[Term, ...] = (
    Term("anatomy", 1.0, frozenset(), "low-passed L1 to HQ",
         "L1 of the output low-passed (σ 3 px) against HQ low-passed: the anatomy, not the speckle",
         lambda b: anatomy_loss(b.fake, b.y)),
    Term("pixel", 0.2, frozenset(), "L1",
         "L1 to HQ at full resolution: small or 0, a large one predicts the conditional median (smooth)",
         lambda b: pixel_loss(b.fake, b.y)),
    Term("mse", 0.0, frozenset(), "squared error",
         "squared error to HQ: the conditional mean, the base the beam-speckle stage adds its grain to",
         lambda b: torch.mean((b.fake - b.y) ** 2)),
    Term("adversarial", 0.1, frozenset({DISCRIMINATOR}), "conditional PatchGAN (LSGAN, spectral norm)",
         "a PatchGAN discriminator's LSGAN loss, conditional on the input (offline.patchgan)",
         lambda b: lsgan_generator_loss(b.judged()), settings=("d_lr",)),
    Term("texture", 0.0, frozenset({FILTERS}), "random-filter texture",
         "Gram matrices of fixed random filters, tile by tile against HQ", lambda b: b.texture(b.fake, b.y)),
    Term("nakagami", 0.0, frozenset({TISSUE}), "block Nakagami m",
         "|log m| error of the envelope's Nakagami m, 16×16 tissue blocks against HQ's: the speckle's shape",
         lambda b: nakagami_loss(b.fake, b.y, tissue=b.tissue)),
    Term("local_histogram", 0.0, frozenset({TISSUE}), "local speckle histogram",
         "the mean-removed grey levels of each 16×16 tissue block against HQ's: the speckle's local distribution",
         lambda b: local_histogram_loss(b.fake, b.y, b.tissue)),
    Term("correlation", 0.0, frozenset({TISSUE}), "speckle autocorrelation",
         "the speckle's autocorrelation at lags 1…--correlation-lags in tissue against HQ's: the grain's size",
         lambda b: correlation_loss(b.fake, b.y, b.tissue, b.correlation_lags), settings=("correlation_lags",)),
    Term("brightness", 0.0, frozenset({TISSUE}), "tissue block brightness",
         "the mean grey of 16×16 tissue blocks against HQ's (the low-passed L1 aims at a median, not the mean)",
         lambda b: brightness_loss(b.fake, b.y, b.tissue)),
)
BY_NAME = {t.name: t for t in TERMS}


def default_weights() -> dict[str, float]:
    return {t.name: t.weight for t in TERMS}


def needs(weights: dict[str, float]) -> frozenset[str]:
    """What the terms with a weight need, together (a discriminator to train, a filter bank to build …)."""
    return frozenset().union(*(t.needs for t in TERMS if weights.get(t.name)))


def settings_off(weights: dict[str, float], given: set[str]) -> list[str]:
    """The given options that belong to terms the loss leaves off."""
    return [s for t in TERMS if not weights.get(t.name) for s in t.settings if s in given]


def check_weights(weights: dict[str, float]) -> None:
    """Refuse, with the reason, a term that cannot apply: unknown or negative."""
    unknown = sorted(set(weights) - set(BY_NAME))
    if unknown:
        raise ValueError(f"unknown loss terms {unknown}; the terms are {', '.join(BY_NAME)}")
    for name, weight in weights.items():
        if weight < 0:
            raise ValueError(f"{BY_NAME[name].option} must be 0 or more, got {weight}")


def describe(weights: dict[str, float]) -> str:
    """The generator's loss as a model card states it: the terms with a weight."""
    parts = [f"{weights[t.name]:g} × {t.label}" for t in TERMS if weights.get(t.name)]
    return "realism: " + " + ".join(parts) + "; no pretrained weights"


def total(weights: dict[str, float], batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The generator's loss: the weighted sum over the terms with a weight, and each weighted term (for the log)."""
    terms = {t.name: weights[t.name] * t.loss(batch) for t in TERMS if weights.get(t.name)}
    return sum(terms.values(), batch.fake.sum() * 0), terms
