"""Pick the fastest device this runtime has, and say in one line which one it is.

Used by the welcome lesson (notebooks/00_welcome.ipynb) and every PyTorch lesson after it:
``device = get_device(); print(describe_device(device))``.
"""

from __future__ import annotations

import importlib.util
import platform
import sys

import torch

_NO_GPU_HINT = "no GPU found; on Colab choose Runtime → Change runtime type → GPU"


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def get_device(prefer: str | torch.device | None = None) -> torch.device:
    """Return ``prefer`` if given (checking it exists), else CUDA, else Apple MPS, else CPU.

    ``prefer`` is ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"cpu"`` or a ``torch.device``.
    Asking for a GPU that this runtime lacks raises ``ValueError`` rather than quietly
    running on the CPU.
    """
    if prefer is not None:
        try:
            device = torch.device(prefer)
        except RuntimeError:
            raise ValueError(f"prefer must be 'cuda', 'mps' or 'cpu' (or None), got {prefer!r}") from None
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(f"asked for {device}, but this runtime has no CUDA GPU ({_NO_GPU_HINT})")
            if device.index is not None and device.index >= torch.cuda.device_count():
                raise ValueError(
                    f"asked for {device}, but this runtime has {torch.cuda.device_count()} CUDA GPU(s)"
                )
        elif device.type == "mps" and not _mps_available():
            raise ValueError(f"asked for {device}, but Apple's MPS backend is not available here")
        elif device.type not in ("cuda", "mps", "cpu"):
            raise ValueError(f"prefer must be 'cuda', 'mps' or 'cpu' (or None), got {prefer!r}")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe_device(device: str | torch.device) -> str:
    """One line for the top of a lesson, e.g. ``"Using cuda: NVIDIA H100 80GB HBM3"``."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"Using {device.type}: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "Using mps: Apple GPU (Metal Performance Shaders)"
    if torch.cuda.is_available() or _mps_available():
        return "Using cpu (a GPU is available: get_device() would pick it)"
    return f"Using cpu ({_NO_GPU_HINT})"


def in_colab() -> bool:
    """True when running inside Google Colab."""
    if "google.colab" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("google.colab") is not None
    except (ImportError, ValueError):  # no parent package "google"
        return False


def _version(module_name: str) -> str:
    module = sys.modules.get(module_name)
    if module is None:
        if importlib.util.find_spec(module_name) is None:
            return "not installed"
        module = importlib.import_module(module_name)
    return str(getattr(module, "__version__", "unknown"))


def environment_report(device: str | torch.device | None = None) -> str:
    """Several lines for the welcome lesson: Python and library versions, the device, Colab.

    ``device`` defaults to :func:`get_device`'s choice.
    """
    device = get_device() if device is None else torch.device(device)
    cuda_build = torch.version.cuda or "none (CPU-only build)"
    lines = [
        f"Python      {platform.python_version()}",
        f"numpy       {_version('numpy')}",
        f"torch       {torch.__version__} (CUDA build: {cuda_build})",
        f"matplotlib  {_version('matplotlib')}",
        f"device      {describe_device(device)}",
        f"Colab       {'yes' if in_colab() else 'no'}",
    ]
    return "\n".join(lines)
