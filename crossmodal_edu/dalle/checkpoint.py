"""Checkpoints that survive a crash and cannot be silently corrupted.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (a model's
``state_dict``, its config as a dict, the optimiser state, the step, the loss history), so
``torch.load(path, weights_only=True)`` reads it without running any pickled code and without
a network.

Three guarantees:

* **Atomic.** It is written to a temporary file in the same folder, flushed to disk, then renamed
  over the old one. ``os.replace`` is atomic on POSIX and Windows: a reader sees the old file or
  the new one, never half of one, so a failure or Ctrl-C while saving leaves the last good
  checkpoint. A temporary file that a killed process (``kill -9``, a power cut) could not remove
  is deleted by the next save of the same checkpoint.
* **Checked.** It carries a SHA-256 checksum of its contents (every tensor's dtype, shape and
  bytes and every other value, in a fixed order); :func:`load_checkpoint` recomputes and compares
  it, so a flipped byte in the weights is caught instead of loading silently.
* **One clear error.** An empty, truncated, unreadable or corrupted file raises
  :class:`CheckpointError` (a ``ValueError``) that names the file and says what to do.

Checkpoints written before checksums existed (no ``"checksum"`` entry) still load: there is
nothing to verify them against, so they are trusted as before. :func:`add_checksum` rewrites such
a file with a checksum, its contents unchanged.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
"""Where the pretrained checkpoints shipped with the package live."""

CHECKSUM_KEY = "checksum"
"""The entry of a checkpoint dict that holds its checksum: ``{"algorithm": "sha256", "digest": hex}``."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be trusted: empty, truncated, unreadable or corrupted."""


def pretrained_path(name: str = "tokenizer") -> Path:
    """Path of a shipped checkpoint, e.g. ``crossmodal_edu/dalle/checkpoints/tokenizer.pt``."""
    return CHECKPOINT_DIR / f"{name}.pt"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _hash_into(digest: "hashlib._Hash", value: Any) -> None:
    """Feed ``value`` into ``digest`` in a fixed order: dict entries sorted by key, tensors as
    dtype, shape and raw bytes, everything else by type and ``repr``."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"tensor {tensor.dtype} {tuple(tensor.shape)}:".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        digest.update(f"dict {len(value)}:".encode())
        for key in sorted(value, key=repr):
            digest.update(f"key {key!r}:".encode())
            _hash_into(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__} {len(value)}:".encode())
        for item in value:
            _hash_into(digest, item)
    else:
        digest.update(f"{type(value).__name__} {value!r};".encode())


def checksum(checkpoint: dict[str, Any]) -> str:
    """SHA-256 hex digest of a checkpoint dict's contents (its ``"checksum"`` entry left out)."""
    digest = hashlib.sha256()
    _hash_into(digest, {key: value for key, value in checkpoint.items() if key != CHECKSUM_KEY})
    return digest.hexdigest()


def _stale_temporaries(path: Path) -> list[Path]:
    """Temporary files that earlier saves of ``path`` left behind (``.NAME.*.tmp`` beside it)."""
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> Path:
    """Write ``checkpoint`` to ``path`` atomically, with a checksum: into a temporary file in the
    same folder (so the rename never crosses file systems), flushed to disk, then renamed over
    ``path``. If anything fails on the way, the temporary file is removed and ``path`` is
    untouched. Temporary files left by earlier saves of ``path`` that were killed outright are
    removed first (so do not save the same path from two processes at once).

    The dict itself is not modified; the file holds a copy with a ``"checksum"`` entry."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in _stale_temporaries(path):
        stale.unlink(missing_ok=True)
    stored = {**checkpoint, CHECKSUM_KEY: {"algorithm": "sha256", "digest": checksum(checkpoint)}}
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(stored, file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes the file private; a checkpoint need not be
        os.replace(temporary, path)
    except BaseException:  # also KeyboardInterrupt: never leave a half-written file behind
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _untrusted(path: Path, problem: str) -> CheckpointError:
    shipped = path.resolve().parent == CHECKPOINT_DIR
    remedy = (
        "restore it (e.g. `git checkout -- " + str(path) + "` or reinstall the package)"
        if shipped
        else "restore it from a backup or retrain it (the training command writes a new one)"
    )
    return CheckpointError(f"the checkpoint {path} {problem}; it cannot be trusted: {remedy}")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: plain data
    only) and verify its checksum. Returns the dict that was saved (without the checksum entry).

    Raises ``FileNotFoundError`` if there is no file, and :class:`CheckpointError` (a
    ``ValueError``) naming the file if it is empty, truncated, unreadable or its checksum does not
    match. A file without a checksum (written before checksums existed) loads unverified."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    size = path.stat().st_size
    if size == 0:
        raise _untrusted(path, "is empty (0 bytes): a save was probably interrupted")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # truncated zip, flipped bytes in the pickle, EOF, ...
        raise _untrusted(path, f"is truncated or corrupted ({size} bytes; reading it failed with "
                               f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from error
    if not isinstance(checkpoint, dict):
        raise _untrusted(path, f"holds a {type(checkpoint).__name__}, not a checkpoint dict")
    stored = checkpoint.pop(CHECKSUM_KEY, None)
    if stored is None:
        return checkpoint  # an older file, from before checksums: nothing to verify it against
    if not isinstance(stored, dict) or stored.get("algorithm") != "sha256" or "digest" not in stored:
        raise _untrusted(path, f"has a malformed checksum entry ({stored!r})")
    if checksum(checkpoint) != stored["digest"]:
        raise _untrusted(path, "does not match its checksum: its contents changed after it was saved "
                               "(a disk or copy error, or an edit)")
    return checkpoint


def add_checksum(path: str | Path) -> Path:
    """Rewrite an older checkpoint (one without a checksum) with a checksum; its contents are
    unchanged. A file that already has one is verified and rewritten as it is."""
    return save_checkpoint(load_checkpoint(path), path)
