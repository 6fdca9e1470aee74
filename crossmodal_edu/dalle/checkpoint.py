"""Checkpoints that survive a crash: written to a temporary file, then renamed over the old one.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (a model's
``state_dict``, its config as a dict, the optimiser state, the step, the loss history), so
``torch.load(path, weights_only=True)`` reads it without running any pickled code and without
a network. ``os.replace`` is atomic on POSIX and Windows: a reader sees the old file or the new
one, never half of one, so a failure or Ctrl-C while saving leaves the last good checkpoint.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
"""Where the pretrained checkpoints shipped with the package live."""


def pretrained_path(name: str = "tokenizer") -> Path:
    """Path of a shipped checkpoint, e.g. ``crossmodal_edu/dalle/checkpoints/tokenizer.pt``."""
    return CHECKPOINT_DIR / f"{name}.pt"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> Path:
    """Write ``checkpoint`` to ``path`` atomically: into a temporary file in the same folder
    (so the rename never crosses file systems), flushed to disk, then renamed over ``path``.
    If anything fails on the way, the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes the file private; a checkpoint need not be
        os.replace(temporary, path)
    except BaseException:  # also KeyboardInterrupt: never leave a half-written file behind
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: plain data only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location=map_location, weights_only=True)
