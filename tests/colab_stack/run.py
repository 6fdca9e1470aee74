#!/usr/bin/env python3
"""Run the course on Google Colab's own package stack: every lesson, exercise and solution, and the
explorers' callbacks, in an environment pinned to Colab's versions.

    python3 tests/colab_stack/run.py                      # build (or reuse) the environment, run everything
    python3 tests/colab_stack/run.py notebooks/02_*.ipynb # only these notebooks (and the widget tests)
    python3 tests/colab_stack/run.py --build-only         # only build the environment

Why: the course's own environment has ipywidgets 8, IPython 9, jupyter_client 8, but Colab runs
ipywidgets 7.7.1, IPython 7.34, ipykernel 6.17, jupyter_client 7.4 (googlecolab/backend-info,
pip-freeze.gpu.txt, 2026-08), and the set-up cell installs the course there with ``--no-deps``, so
the course's own floors never reach Colab. This script checks the course on that stack instead.

1. **The environment**: a virtual environment at ``build/colab-stack-venv`` with exactly the
   versions in ``tests/colab_stack/pins.txt`` (``pip install --no-deps -r pins.txt``, then
   ``pip check``). It is reused while pins.txt, the Python and :data:`STACK_VERSION` stay the same
   (a stamp file holds their hash), so only the first run downloads anything.

   **Python 3.11 and torch 2.13.0, not Colab's 3.13 and torch 2.11.** A CPU build of torch 2.11
   for Python 3.13 is not reachable on the machines that run this check (PyPI serves only the
   CUDA build on Linux, several GB; download.pytorch.org is not reachable), while torch 2.13.0's
   CPU build for Python 3.11 is on local disk. Everything else is Colab's own version. Another
   interpreter: ``--python /path/to/python3.13`` (and a torch build for it that pip can find).
2. **The course, installed the way the set-up cell installs it**: the set-up cell's own source
   (from ``notebooks/00_welcome.ipynb``) runs in the environment with ``COLAB_RELEASE_TAG`` set and
   a stand-in ``google.colab`` (only what the cell calls: ``output.enable_custom_widget_manager``,
   which logs each call). The one change: in place of ``git+<repository>@<branch>`` it installs a
   wheel built from this checkout (tracked and untracked, not ignored, files). So
   ``crossmodal_edu`` is imported from the environment's site-packages, with only the package data
   that ``pyproject.toml`` ships, as on Colab.
3. **Every notebook** in notebooks/, exercises/ and solutions/ (found by name, so new lessons are
   included), each with nbclient in a kernel of that environment, in an empty working folder (Colab
   starts in an empty ``/content``, without the repository). A run fails on any error; on a
   set-up cell that did not install the course or turn on the widget manager; when a cell marked
   ``# NBVAL_CHECK_OUTPUT`` prints something other than its committed output (what the lesson's
   text says); when a solution's scoreboard is not full marks or an exercise's is not zero. A
   lesson's failure that its author has not fixed yet can be listed in ``KNOWN_FAILURES``
   (inside.py) with the text it shows: it is reported, not failed, until it passes (then the run
   fails until the line is deleted).
4. **The explorers' callbacks**: ``tests/test_widgets.py`` runs under pytest inside the
   environment (against the installed package), so every control of AttentionExplorer,
   HeadExplorer and PromptPlayground is driven on ipywidgets 7.7.1.

Exit status: 0 everything passed; 1 something failed (the report says what); 77 the environment
could not be built here (no route to a package index with Colab's versions):
``tests/test_colab_stack.py`` then skips and says why. Timings go to the report, not into tests.

This file uses only the standard library (it runs before the environment exists); the part that
runs inside the environment is ``tests/colab_stack/inside.py``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PINS = HERE / "pins.txt"
DEFAULT_VENV = ROOT / "build" / "colab-stack-venv"
#: Bump when the way the environment is built changes (the cached one is then rebuilt).
STACK_VERSION = "1"
#: Where pip finds a CPU build of torch when the pinned one is not on an index it already knows.
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
#: The URL the set-up cell installs from: replaced by the wheel built from this checkout.
GIT_URL = re.compile(r"git\+https://github\.com/[^\s\"'@]+@[^\s\"',]+")
CANNOT_BUILD = 77

STUB_INIT = '''"""A stand-in for Colab's ``google.colab`` (tests/colab_stack/run.py): only what the set-up cell uses."""
from google.colab import output  # noqa: F401
'''
STUB_OUTPUT = '''"""A stand-in for ``google.colab.output``: logs each call, so the check can see the cell made it."""
import os


def enable_custom_widget_manager():
    log = os.environ.get("CROSSMODAL_COLAB_STUB_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"enable_custom_widget_manager {os.getpid()}\\n")
'''


_START = time.perf_counter()


def say(message: str) -> None:
    print(f"[colab-stack {time.perf_counter() - _START:5.0f} s] {message}", flush=True)


class CannotBuild(RuntimeError):
    """The environment cannot be built here (no package index with Colab's versions)."""


def pinned(name: str) -> str:
    """The version pins.txt gives ``name``."""
    for line in PINS.read_text().splitlines():
        if line.split("==")[0].strip().lower() == name.lower():
            return line.split("==", 1)[1].strip()
    raise KeyError(f"{name} is not pinned in {PINS}")


def stack_key(python: str) -> str:
    version = subprocess.run([python, "-c", "import sys; print(sys.version)"], capture_output=True,
                             text=True, check=True).stdout.strip()
    digest = hashlib.sha256(PINS.read_bytes()).hexdigest()
    return json.dumps({"python": version, "pins": digest, "stack": STACK_VERSION})


def _pip(venv_python: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [str(venv_python), "-m", "pip", *args]
    say("$ " + " ".join(cmd[2:]))
    result = subprocess.run(cmd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, cmd, result.stdout, result.stderr)
    return result


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def build_environment(venv: Path, python: str) -> Path:
    """The pinned environment at ``venv`` (reused when its stamp matches); returns its Python."""
    stamp = venv / "colab-stack-stamp.json"
    key = stack_key(python)
    vpy = _venv_python(venv)
    if stamp.exists() and stamp.read_text() == key and vpy.exists():
        say(f"reusing {venv.relative_to(ROOT) if venv.is_relative_to(ROOT) else venv} (pins unchanged)")
        return vpy
    if venv.exists():
        shutil.rmtree(venv)
    say(f"building {venv} from {PINS.relative_to(ROOT)} with {python}")
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    torch = f"torch=={pinned('torch')}"
    probe = _pip(vpy, "download", "--no-deps", "-q", "-d", str(venv / "probe"), f"ipywidgets=={pinned('ipywidgets')}",
                 check=False)
    shutil.rmtree(venv / "probe", ignore_errors=True)
    if probe.returncode != 0:
        raise CannotBuild(f"pip cannot download ipywidgets=={pinned('ipywidgets')} (no route to PyPI?): "
                          + (probe.stderr.strip().splitlines() or ["no message"])[-1])
    if _pip(vpy, "install", "--no-deps", "-q", torch, check=False).returncode != 0:
        if _pip(vpy, "install", "--no-deps", "-q", torch, "--index-url", TORCH_CPU_INDEX, check=False).returncode:
            raise CannotBuild(f"pip can find {torch} neither on its indexes nor on {TORCH_CPU_INDEX}")
    _pip(vpy, "install", "--no-deps", "-q", "-r", str(PINS))
    check = _pip(vpy, "check", check=False)
    if check.returncode != 0:
        raise RuntimeError(f"the pinned versions do not fit together (pip check):\n{check.stdout}")
    stamp.write_text(key)
    return vpy


def _source_files(root: Path) -> list[str]:
    """The files a clone would carry, as far as this checkout knows: tracked and untracked, not ignored."""
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root,
                             capture_output=True, check=True).stdout.decode()
        return [f for f in out.split("\0") if f and (root / f).is_file()]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "build", "dist", "__pycache__"}
        return [p.relative_to(root).as_posix() for p in root.rglob("*")
                if p.is_file() and not skip & set(p.relative_to(root).parts)]


def build_wheel(vpy: Path, workdir: Path) -> Path:
    """A wheel of this checkout (what ``pip install git+<repository>`` would build on Colab)."""
    source = workdir / "checkout"
    for rel in _source_files(ROOT):
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, source / rel)
    _pip(vpy, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(workdir / "wheels"), str(source))
    (wheel,) = (workdir / "wheels").glob("crossmodal_edu-*.whl")
    return wheel


def setup_cell_source(notebook: Path) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    (cell,) = [c for c in cells if c.get("id") == "colab-setup"]
    return "".join(cell["source"])


def colab_source(source: str, wheel: Path) -> str:
    """The set-up cell's source with the repository URL replaced by ``wheel``."""
    if len(GIT_URL.findall(source)) != 1:
        raise RuntimeError("the set-up cell no longer installs from one git+https://github.com/...@branch URL: "
                           "update GIT_URL in tests/colab_stack/run.py\n" + source)
    return GIT_URL.sub(lambda _: str(wheel), source)


def colab_environment(vpy: Path, stub_log: Path) -> dict[str, str]:
    """What a Colab kernel's environment has that matters here: the release tag, the inline backend."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "MPLBACKEND", "VIRTUAL_ENV",
                                                          "JUPYTER_PATH", "JUPYTER_DATA_DIR"}}
    venv = vpy.parents[1]
    env.update(COLAB_RELEASE_TAG="release-colab-stack-check", CROSSMODAL_COLAB_STUB_LOG=str(stub_log),
               MPLBACKEND="module://matplotlib_inline.backend_inline", VIRTUAL_ENV=str(venv),
               PATH=f"{vpy.parent}{os.pathsep}{env.get('PATH', '')}",
               # kernels: only the environment's own python3 kernel, never one from the user's folders
               JUPYTER_PATH=str(venv / "share" / "jupyter"), JUPYTER_DATA_DIR=str(venv / "share" / "jupyter"),
               PYTHONNOUSERSITE="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PYDEVD_DISABLE_FILE_VALIDATION="1")  # debugpy's warning about frozen modules, on every kernel
    return env


def install_course(vpy: Path, wheel: Path, env: dict[str, str]) -> None:
    """Install the course by running the set-up cell's own source, as a learner on Colab does."""
    _pip(vpy, "uninstall", "-y", "-q", "crossmodal-edu", check=False)   # a cached environment's old copy
    site = Path(subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "google" / "colab").mkdir(parents=True, exist_ok=True)
    (site / "google" / "colab" / "__init__.py").write_text(STUB_INIT)
    (site / "google" / "colab" / "output.py").write_text(STUB_OUTPUT)
    source = colab_source(setup_cell_source(ROOT / "notebooks" / "00_welcome.ipynb"), wheel)
    say("running the set-up cell (installs the course from the wheel, --no-deps)")
    result = subprocess.run([str(vpy), "-c", source], capture_output=True, text=True, env=env,
                            cwd=wheel.parent)
    print(result.stdout + result.stderr, end="", flush=True)
    if result.returncode != 0 or "crossmodal_edu installed" not in result.stdout:
        raise RuntimeError("the set-up cell did not install the course (output above)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every lesson, exercise and solution")
    parser.add_argument("--python", default=sys.executable, help="the interpreter to build the environment with")
    parser.add_argument("--venv", type=Path, default=Path(os.environ.get("CROSSMODAL_COLAB_STACK_VENV", DEFAULT_VENV)))
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("CROSSMODAL_COLAB_STACK_JOBS", "2")),
                        help="notebooks run at once (default 2)")
    parser.add_argument("--build-only", action="store_true")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        vpy = build_environment(args.venv.resolve(), args.python)
    except CannotBuild as error:
        say(f"cannot build the Colab stack here: {error}")
        return CANNOT_BUILD
    except subprocess.CalledProcessError as error:
        say(f"building the environment failed: {' '.join(error.cmd)}\n{error.stdout}{error.stderr}")
        return 1
    say(f"environment ready in {time.perf_counter() - start:.0f} s")
    if args.build_only:
        return 0
    with tempfile.TemporaryDirectory(prefix="colab-stack-") as tmp:
        tmp = Path(tmp)
        stub_log = tmp / "google-colab-calls.log"
        env = colab_environment(vpy, stub_log)
        try:
            wheel = build_wheel(vpy, tmp)
            install_course(vpy, wheel, env)
        except (RuntimeError, subprocess.CalledProcessError) as error:
            say(f"installing the course failed: {error}")
            for stream in ("stdout", "stderr"):
                print(getattr(error, stream, "") or "", end="")
            return 1
        cmd = [str(vpy), str(HERE / "inside.py"), "--root", str(ROOT), "--wheel", str(wheel),
               "--stub-log", str(stub_log), "--jobs", str(args.jobs), *(str(p.resolve()) for p in args.notebooks)]
        code = subprocess.run(cmd, env=env, cwd=tmp).returncode
    say(f"{'passed' if code == 0 else 'FAILED'} in {time.perf_counter() - start:.0f} s in all")
    return code


if __name__ == "__main__":
    sys.exit(main())
