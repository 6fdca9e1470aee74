"""Start the slowest test's work first.

tests/test_colab_stack.py's main test builds an environment with Colab's package versions and runs every
notebook in it, which takes minutes. With the test files spread over several processes (pytest-xdist, as
``course.py test`` runs them), that test would start when its file's turn comes, often last, and run
alone at the end while the other processes sit idle. So as soon as the tests are collected, if that test
is among them, its run starts in the background (once per test run, whichever process gets there
first), and the test itself waits for the result (``colab_stack_run`` below).
"""
from __future__ import annotations

import fcntl
import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("colab_stack_early", ROOT / "tests" / "colab_stack" / "early.py")
early = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(early)
ARTIFACTS = early.ARTIFACTS
COLAB_TEST = "tests/test_colab_stack.py::test_every_notebook_and_explorer_runs_on_colabs_package_stack"


def pytest_collection_finish(session):
    if not any(item.nodeid == COLAB_TEST for item in session.items):
        return
    files = early.colab_stack_files(session.config)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with open(ARTIFACTS / "colab-stack.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if files["started"].exists():
            return
        for old in ARTIFACTS.glob("colab-stack-*.*"):  # an earlier run's files
            old.unlink(missing_ok=True)
        runner = ("import subprocess, sys; "
                  f"log = open({str(files['log'])!r}, 'w'); "
                  f"rc = subprocess.call([sys.executable, {str(ROOT / 'tests' / 'colab_stack' / 'run.py')!r}], "
                  "stdout=log, stderr=subprocess.STDOUT, timeout=3600); "
                  f"open({str(files['rc'])!r}, 'w').write(str(rc))")
        subprocess.Popen([sys.executable, "-c", runner], start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        files["started"].write_text("started\n")
