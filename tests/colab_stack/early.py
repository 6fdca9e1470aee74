"""Where the Colab-stack run started early by tests/conftest.py leaves its log and exit status, per test run."""
from __future__ import annotations

import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "build" / "test-artifacts"


def run_id(config) -> str:
    """One id per test run, shared by all of its xdist processes."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        return str(workerinput["testrunuid"])
    if not hasattr(config, "_course_run_id"):
        config._course_run_id = uuid.uuid4().hex
    return config._course_run_id


def colab_stack_files(config) -> dict[str, Path]:
    stem = ARTIFACTS / f"colab-stack-{run_id(config)}"
    return {"log": stem.with_suffix(".log"), "rc": stem.with_suffix(".rc"), "started": stem.with_suffix(".started")}
