"""An abdominal scene for the phantom: a right-upper-quadrant view through the liver to the right kidney, as a
curved abdominal array sees it — other anatomy than the fetal head, so that a model meets organs, vessels and layers
it was not trained on (and a measure of invented structure has boundaries of other shapes to keep).

From the skin down: a subcutaneous fat layer and a muscle layer with wavy boundaries, the liver (fully developed
speckle) crossed by hepatic and portal vessels (anechoic, round or oval in cross-section, with posterior
enhancement), sometimes the gallbladder (anechoic), the kidney (hypoechoic cortex, darker medullary pyramids, a
bright central sinus) and the diaphragm (a bright curve that shadows what lies beneath). Echo and attenuation per
label live with the first scene's, in usnst_stream.phantom.
"""
from __future__ import annotations

import math

import numpy as np

from usnst.engines.acoustics import (
    DIAPHRAGM,
    FAT,
    FLUID,
    KIDNEY,
    LIVER,
    MEDULLA,
    MUSCLE,
    SINUS,
    TISSUE,
    VESSEL,
)
from usnst_stream.phantom import Scene, _in_ellipse


class AbdominalScene(Scene):
    """A random liver-and-kidney scene in world millimetres (the probe's face near y = 0, depth increasing down)."""

    def _draw_anatomy(self, rng: np.random.Generator) -> None:
        self.fat = (rng.uniform(8, 18), rng.uniform(0, 2 * math.pi), rng.uniform(1, 3))  # depth, phase, ripple
        self.muscle = rng.uniform(6, 12)
        self.vessels = [(rng.uniform(-60, 60), rng.uniform(40, 95), rng.uniform(2.5, 9), rng.uniform(0.6, 1.0),
                         rng.uniform(-math.pi, math.pi)) for _ in range(rng.integers(3, 8))]
        self.gallbladder = (rng.uniform(-50, -15), rng.uniform(45, 65), rng.uniform(12, 20), rng.uniform(7, 11),
                            rng.uniform(-0.6, 0.6)) if rng.random() < 0.5 else None
        self.kidney = (rng.uniform(-25, 35), rng.uniform(85, 105), rng.uniform(42, 55), rng.uniform(20, 27),
                       rng.uniform(-0.5, 0.5))
        self.pyramids = rng.uniform(-math.pi, math.pi, rng.integers(5, 8))
        self.diaphragm = (rng.uniform(118, 132), rng.uniform(0.002, 0.006), rng.uniform(-40, 40))

    def labels(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        lab = np.full(x.shape, LIVER, np.uint8)
        depth, phase, ripple = self.fat
        skin_fat = depth + ripple * np.sin(x / 17.0 + phase)
        lab[y < skin_fat + self.muscle + 1.5 * np.sin(x / 23.0 - phase)] = MUSCLE
        lab[y < skin_fat] = FAT
        for vx, vy, r, squash, a in self.vessels:
            lab[_in_ellipse(x, y, vx, vy, r, r * squash, a)[0] & (lab == LIVER)] = VESSEL
        if self.gallbladder is not None:
            lab[_in_ellipse(x, y, *self.gallbladder)[0] & (lab == LIVER)] = FLUID
        kx, ky, krx, kry, ka = self.kidney
        in_kidney, u, v = _in_ellipse(x, y, kx, ky, krx, kry, ka)
        lab[in_kidney] = KIDNEY
        for angle in self.pyramids:  # in the medulla, between the cortex and the sinus
            cx, cy = 0.62 * math.cos(angle), 0.62 * math.sin(angle)
            lab[in_kidney & ((u - cx) ** 2 / 0.045 + (v - cy) ** 2 / 0.03 < 1)] = MEDULLA
        lab[in_kidney & (u ** 2 / 0.16 + v ** 2 / 0.12 < 1)] = SINUS
        top, curve, centre = self.diaphragm
        line = top + curve * (x - centre) ** 2
        lab[(y > line) & (y < line + 2.5)] = DIAPHRAGM
        lab[y >= line + 2.5] = TISSUE  # beyond the diaphragm: tissue the phantom does not name
        return lab
