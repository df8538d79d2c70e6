"""Finding pretrained weights the project cannot ship (VGG19, InceptionV3): one search order for both.

Order: an explicit path; the environment variable; the torch hub cache; a download into that cache when online.
When none works the error says, in one sentence, where to put the file.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where weights are loaded, so the command line starts without torch
    import torch

log = logging.getLogger(__name__)


class WeightsNotFound(FileNotFoundError):
    """No usable weights file; the message says where to put one."""


def find_weights(path: str | os.PathLike | None, filename: str, url: str, env_var: str, flag: str,
                 download: bool = True) -> Path:
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise WeightsNotFound(f"{flag} {p}: no such file")
        return p
    import torch

    cache = Path(torch.hub.get_dir()) / "checkpoints"
    candidates = ([Path(os.environ[env_var])] if os.environ.get(env_var) else []) + [cache / filename]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None and download:
        try:
            torch.hub.load_state_dict_from_url(url, progress=False, map_location="cpu")
            found = cache / filename if (cache / filename).is_file() else None
        except Exception as exc:  # offline, proxy, HTTP error...
            log.debug("download of %s failed: %s", url, exc)
    if found is None:
        raise WeightsNotFound(f"{filename} not found: pass {flag} PATH, or put {filename} in {cache} (from {url}), "
                              f"or set ${env_var}; {flag} random gives seeded random weights for a test run")
    return found


def frozen(model: torch.nn.Module) -> torch.nn.Module:
    """Eval mode, no gradients for the parameters: a fixed loss or feature network."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
