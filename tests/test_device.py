"""Specification of crossmodal_edu.device: pick the best device, and say which in plain words."""
import sys
import types

import pytest
import torch

from crossmodal_edu import device as device_module
from crossmodal_edu.device import describe_device, environment_report, get_device, in_colab

HAS_CUDA = torch.cuda.is_available()


def test_get_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_module, "_mps_available", lambda: True)
    assert get_device() == torch.device("mps")
    monkeypatch.setattr(device_module, "_mps_available", lambda: False)
    assert get_device() == torch.device("cpu")


def test_get_device_honours_an_explicit_cpu_choice():
    assert get_device("cpu") == torch.device("cpu")
    assert get_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.skipif(HAS_CUDA, reason="this runtime has a CUDA GPU")
def test_asking_for_a_missing_gpu_raises_a_value_error_with_the_colab_hint():
    with pytest.raises(ValueError, match=r"no CUDA GPU.*Runtime → Change runtime type → GPU"):
        get_device("cuda")


def test_asking_for_an_unknown_device_raises_a_value_error():
    with pytest.raises(ValueError, match=r"prefer must be 'cuda', 'mps' or 'cpu'.*'tpu'"):
        get_device("tpu")


def test_describe_device_says_how_to_get_a_gpu_when_there_is_none(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_module, "_mps_available", lambda: False)
    assert describe_device("cpu") == (
        "Using cpu (no GPU found; on Colab choose Runtime → Change runtime type → GPU)"
    )


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU in this runtime")
def test_describe_device_names_the_cuda_gpu():
    line = describe_device(get_device())
    assert line == f"Using cuda: {torch.cuda.get_device_name(0)}"
    assert "get_device() would pick it" in describe_device("cpu")


def test_environment_report_lists_versions_device_and_colab():
    import numpy

    report = environment_report("cpu")
    lines = report.splitlines()
    assert [line.split()[0] for line in lines] == ["Python", "numpy", "torch", "matplotlib", "device", "Colab"]
    assert numpy.__version__ in report and torch.__version__ in report
    assert "Using cpu" in report
    assert lines[-1].endswith("no")


def test_in_colab_detects_an_imported_google_colab(monkeypatch):
    assert in_colab() is False
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert in_colab() is True
