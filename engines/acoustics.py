"""Facts of the simulated acoustics, stated once: the label map's values, when a pixel has echo, the phantom's HQ
acquisition (what the beam-speckle stage forms by default) and the display range the realism measures assume.
The phantom renders by them, the stage and the losses form and judge speckle by them, the metrics measure by them;
nothing below restates them as literals.
"""
from __future__ import annotations

import math

# Segmentation labels (the thesis' convention: fetus labels lie in [150, 220]).
OUTSIDE, TISSUE, WALL, FLUID, PLACENTA = 0, 40, 60, 100, 120
CHOROID, BRAIN, BODY, MIDLINE, SKULL = 160, 170, 180, 190, 210
FETUS_LABELS = (CHOROID, BRAIN, BODY, MIDLINE, SKULL)
# The abdominal scenes' (usnst_stream.abdomen): below 150, as the thesis' other tissue.
FAT, MUSCLE, LIVER, DIAPHRAGM, VESSEL, KIDNEY, MEDULLA, SINUS = 20, 30, 50, 70, 90, 130, 140, 145
# Labels that hold fully developed speckle; fluid and vessels (anechoic), skull and diaphragm (specular), midline and
# choroid (thin), the renal pyramids and sinus (small, mottled) do not.
SPECKLE_LABELS = (TISSUE, WALL, PLACENTA, BRAIN, BODY, FAT, MUSCLE, LIVER, KIDNEY)
ANECHOIC_LABELS = (FLUID, VESSEL)  # no scatterers: a scanner shows them dark, with sparse grain above its floor

# An input above this grey (0–1) has echo: simulators and scanners render "no echo" as exact black.
ECHO_LEVEL = 1.0 / 255.0

# ln of a Rayleigh envelope with unit mean power has mean −γ/2 (γ: the Euler–Mascheroni constant).
EULER_GAMMA = 0.5772156649015329

# The phantom's HQ acquisition: a sector of rays from an apex, sampled along each ray, a Gaussian PSF, shown over a
# log-compressed range.
HQ_RAYS = 256
HQ_SAMPLES = 640
HQ_LATERAL_SIGMA_RAYS = 0.9
HQ_AXIAL_SIGMA_MM = 0.25
HQ_AXIAL_SIGMA_SAMPLES = 1.37  # 0.25 mm over a 117 mm ray of 640 samples
HQ_SAMPLE_MM = 117.0 / (HQ_SAMPLES - 1)  # mm per sample along a ray of the phantom's original probe (3–120 mm)
HQ_DYNAMIC_RANGE_DB = 55.0
GREY_PER_NEPER_HQ = 20 / math.log(10) / HQ_DYNAMIC_RANGE_DB  # grey (0–1) per neper of envelope on that display

# The display range the realism measures assume to recover envelopes from grey (Nakagami m, envelope-power losses).
# Every card's figures were measured with it; the phantom's HQ shows 55 dB, its LQ 45 dB.
MEASURED_DYNAMIC_RANGE_DB = 50.0
