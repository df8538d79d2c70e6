"""Training a net as the base under the beam-speckle stage (`usnst train --loss realism --beam-speckle`).

engines.beam_speckle adds a scanner's grain to the net's output, low-passed. The grain does not depend on the net,
so the losses can judge exactly what the engine will show — ``clip(lowpass(net(x)) + grain)`` — and their gradients
reach the net through the low-pass alone: the net learns the anatomy and the mean grey that make the *sum* pass.
Each training frame's grain is formed on its own fan (fitted once) and drawn anew every ``REFRESH`` steps from
generators seeded by (seed, step), so a resumed run sees the same grains.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from usnst.engines.beam_speckle import BeamSpeckle, BeamSpeckleConfig, NoFan, fit_fan
from usnst.engines.geometry import echo_region
from usnst.offline.losses import gaussian_lowpass
from usnst_io.media import to_float, to_uint8

log = logging.getLogger(__name__)

REFRESH = 25  # steps between new grains for every training frame


class TrainingGrains:
    """The grain of every training frame, on its fan; frames without a fan get none (zeros)."""

    def __init__(self, config: BeamSpeckleConfig, inputs: list[np.ndarray], seed: int):
        self.stage, self.seed = BeamSpeckle(config), seed
        self.maps = []
        for frame in inputs:
            try:
                fan = fit_fan(to_float(frame))
                self.maps.append(self.stage.scan_maps(fan, frame.shape))
            except NoFan:
                self.maps.append(None)
        missing = sum(m is None for m in self.maps)
        if missing:
            log.warning("beam speckle: %d of %d training frames have no fan; they train without grain", missing,
                        len(self.maps))
        self.shapes = [f.shape for f in inputs]
        self._drawn_at: int | None = None
        self.grains: list[np.ndarray] = []

    def at(self, step: int) -> list[np.ndarray]:
        """Every frame's grain (grey levels to add) for this step."""
        epoch = step // REFRESH
        if self._drawn_at != epoch:
            rng = np.random.default_rng([self.seed, epoch, 31337])
            shape = self.stage.plane_shape[2:]
            self.grains = [np.zeros(s, np.float32) if m is None else self.stage.grain(
                m, [rng.standard_normal(shape, dtype=np.float32) for _ in range(2)]) for m, s in zip(self.maps, self.shapes)]
            self._drawn_at = epoch
        return self.grains


def under_stage(out: torch.Tensor, x: torch.Tensor, grain: torch.Tensor, config: BeamSpeckleConfig) -> torch.Tensor:
    """What the engine shows for a net output ``out`` of input ``x``: the output low-passed inside the echo region
    (normalised convolution, as BeamSpeckle.base), the kept share of its own texture, plus the grain, clipped, black
    where the input has no echo."""
    echo = echo_region(x)
    base = out
    if config.base_sigma:
        base = gaussian_lowpass(out * echo, config.base_sigma) / gaussian_lowpass(echo, config.base_sigma).clamp_min(1e-6)
    return torch.clamp(base + config.detail * (out - base) + grain, 0.0, 1.0) * echo


def speckled_runner(run, config: BeamSpeckleConfig, seed: int):
    """uint8 frame → uint8 frame: ``run`` (the net) then the stage, planes from a fixed seed (validation)."""
    stage = BeamSpeckle(config)
    rng = np.random.default_rng(seed)

    def speckled(frame: np.ndarray) -> np.ndarray:
        planes = [rng.standard_normal(stage.plane_shape[2:], dtype=np.float32) for _ in range(2)]
        return to_uint8(stage.apply(to_float(run(frame)), to_float(frame), planes))
    return speckled
