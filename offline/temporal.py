"""Temporal stability of stylized sequences: does the output flicker where the input does not?

A per-frame network can make a still scene shimmer (fresh injected noise every frame makes speckle 'boil') even
when each frame alone looks right. The measure compares how much the output changes from frame to frame with how
much the input does, on the same frames:

- ``ratio`` = mean |y_t − y_{t−1}| / mean |x_t − x_{t−1}|: 1 means the output moves exactly as much as the input,
  above 1 means added temporal change (flicker), below 1 means the output smooths motion away.
- ``static_output_change``: mean |y_t − y_{t−1}| over the pairs whose *input* did not change at all; a stable
  stylization gives 0 there. Values are in grey levels (0–255).

Sequences are read by usnst_io.media (image folders, videos, DICOM cines, recordings).
"""
from __future__ import annotations

import numpy as np


def flicker(inputs: list[np.ndarray], outputs: list[np.ndarray]) -> dict:
    """Frame-to-frame change of the outputs against that of the inputs (see the module docstring)."""
    if len(inputs) != len(outputs) or len(inputs) < 2:
        raise ValueError(f"need two equally long sequences of ≥ 2 frames, got {len(inputs)} and {len(outputs)}")
    d_in, d_out, static = [], [], []
    for t in range(1, len(inputs)):
        if outputs[t].shape != outputs[t - 1].shape or inputs[t].shape != inputs[t - 1].shape:
            raise ValueError(f"frame {t} changes size")
        din = float(np.mean(np.abs(inputs[t].astype(np.float32) - inputs[t - 1].astype(np.float32))))
        dout = float(np.mean(np.abs(outputs[t].astype(np.float32) - outputs[t - 1].astype(np.float32))))
        d_in.append(din)
        d_out.append(dout)
        if din == 0.0:
            static.append(dout)
    mean_in, mean_out = float(np.mean(d_in)), float(np.mean(d_out))
    return {"frames": len(inputs), "input_change": mean_in, "output_change": mean_out,
            "ratio": mean_out / mean_in if mean_in > 0 else (float("inf") if mean_out > 0 else 1.0),
            "static_pairs": len(static), "static_output_change": float(np.mean(static)) if static else None}
