#!/usr/bin/env python3
"""Set up the crossmodal-edu course, open it in JupyterLab, or run its tests.

    python3 course.py lab           # set up (first time only) and open the course in JupyterLab
    python3 course.py test          # set up (first time only) and run every test and lesson
    python3 course.py setup         # only set up
    python3 course.py execute NB…   # re-run notebooks in place (for course authors)

Add ``--cpu`` to ``setup``/``lab``/``test`` to install PyTorch's CPU-only build (about 200 MB
instead of the several-GB CUDA build that PyPI serves on Linux). Anything after the command's own
options is passed on to ``jupyter lab`` or ``pytest``.

Where it installs:
* inside an activated conda environment, a virtual environment, or Google Colab: into that
  environment, reusing the PyTorch already there;
* otherwise: into ``.venv/`` in this folder, created on first use. If the Python that runs this
  script already has PyTorch, ``.venv`` sees it (``--system-site-packages``) instead of
  downloading it again.

This file uses only the standard library, so it runs on a fresh Python.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = ROOT / ".course-setup-stamp"
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
FIRST_LESSON = "notebooks/00_welcome.ipynb"


def say(message: str) -> None:
    print(f"[course] {message}", flush=True)


def run(cmd: list[str], **kwargs) -> None:
    say("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True, **kwargs)


def has_module(python: str, module: str) -> bool:
    probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([python, "-c", probe], capture_output=True).returncode == 0


def active_environment() -> str | None:
    """Name the environment this interpreter already lives in, if the learner chose one."""
    if "google.colab" in sys.modules or os.environ.get("COLAB_RELEASE_TAG"):
        return "Google Colab"
    if os.environ.get("CONDA_PREFIX") and os.environ.get("CONDA_DEFAULT_ENV", "base") != "base":
        return f"conda environment '{os.environ['CONDA_DEFAULT_ENV']}'"
    if sys.prefix != sys.base_prefix and Path(sys.prefix).resolve() != VENV.resolve():
        return f"virtual environment {sys.prefix}"
    return None


def venv_python() -> str:
    scripts = "Scripts" if os.name == "nt" else "bin"
    exe = "python.exe" if os.name == "nt" else "python"
    return str(VENV / scripts / exe)


def target_python() -> str:
    """The interpreter the course is installed into (creating .venv when needed)."""
    env = active_environment()
    if env:
        say(f"using the active {env}: {sys.executable}")
        return sys.executable
    if not Path(venv_python()).exists():
        reuse_torch = has_module(sys.executable, "torch")
        say(f"creating {VENV.name}/" + (" (it will reuse this Python's PyTorch)" if reuse_torch else ""))
        venv.EnvBuilder(with_pip=True, system_site_packages=reuse_torch).create(VENV)
    return venv_python()


def setup_fingerprint(python: str, cpu: bool) -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    return json.dumps({"python": python, "pyproject": digest, "cpu": cpu})


def setup(cpu: bool) -> str:
    python = target_python()
    fingerprint = setup_fingerprint(python, cpu)
    if STAMP.exists() and STAMP.read_text() == fingerprint and has_module(python, "crossmodal_edu"):
        say("already set up (delete .course-setup-stamp to force a reinstall)")
        return python
    pip = [python, "-m", "pip", "install", "--progress-bar", "off"]
    if has_module(python, "torch"):
        say("PyTorch is already installed: keeping it")
    elif cpu:
        say("installing the CPU-only build of PyTorch")
        run(pip + ["torch", "--index-url", CPU_TORCH_INDEX])
    else:
        say("installing PyTorch from PyPI (on Linux this is the CUDA build, several GB; "
            "use --cpu for a 200 MB CPU-only build)")
    say("installing the course package and its tools (the first time takes a few minutes)")
    run(pip + ["-e", f"{ROOT}[test]"])
    STAMP.write_text(fingerprint)
    say("set-up complete")
    return python


# Committed notebooks must carry their figures: a kernel started with MPLBACKEND=Agg (as `test` sets
# for pytest) draws every plot and stores none. The inline backend stores each figure as a PNG.
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


def execute_notebooks(python: str, notebooks: list[str]) -> None:
    env = dict(os.environ, MPLBACKEND=INLINE_BACKEND)
    for nb in notebooks:
        run([python, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", "--inplace",
             "--ExecutePreprocessor.timeout=600",
             "--ExecutePreprocessor.record_timing=False", nb], cwd=ROOT, env=env)


def parallel_options(python: str, rest: list[str], env: dict[str, str]) -> list[str]:
    """pytest-xdist options that spread the test files over the CPU cores: ``-n N --dist loadfile``
    (every cell of a notebook stays in one process, in order, as nbval needs), with N the number
    of cores, at most 4 (each process may start a notebook kernel). None if the caller chose
    (``-n``, ``--dist``, ``-p no:xdist``), if there is one core, or if xdist is missing. Each
    process gets an equal share of the cores' threads (``OMP_NUM_THREADS``), unless set already."""
    chosen = any(a in ("-n", "--numprocesses", "--dist") or a.startswith(("-n", "--numprocesses=", "--dist="))
                 or a == "no:xdist" for a in rest)
    cores = os.cpu_count() or 1
    if chosen or cores < 2 or not has_module(python, "xdist"):
        return []
    workers = min(4, cores)
    env.setdefault("OMP_NUM_THREADS", str(max(1, cores // workers)))
    return ["-n", str(workers), "--dist", "loadfile"]


def lab_environment(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the course's own JupyterLab defaults (jupyter-config/) on the config path.

    They are defaults, below the learner's own settings; today they only turn off the first-start
    prompt about fetching Jupyter news."""
    env = dict(env)
    paths = [str(ROOT / "jupyter-config")] + [p for p in env.get("JUPYTER_CONFIG_PATH", "").split(os.pathsep) if p]
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["setup", "lab", "test", "execute"])
    parser.add_argument("--cpu", action="store_true", help="install PyTorch's CPU-only build")
    args, rest = parser.parse_known_args(argv)

    python = setup(args.cpu)
    env = dict(os.environ)
    try:
        if args.command == "lab":
            # Serve the whole repository (so lessons can link to benchmarks/, exercises/, ...)
            # and open the welcome lesson.
            lab = [python, "-m", "jupyter", "lab", f"--ServerApp.root_dir={ROOT}",
                   f"--LabApp.default_url=/lab/tree/{FIRST_LESSON}"]
            if hasattr(os, "geteuid") and os.geteuid() == 0 and "--allow-root" not in rest:
                say("running as root (a container?): adding --allow-root")
                lab.append("--allow-root")
            run([*lab, *rest], cwd=ROOT, env=lab_environment(env))
        elif args.command == "test":
            env.setdefault("MPLBACKEND", "Agg")
            options = parallel_options(python, rest, env)
            if options:
                say(f"running the tests in {options[1]} processes, one test file or notebook each "
                    "(pass -n 0 for one process)")
            run([python, "-m", "pytest", *options, *rest], cwd=ROOT, env=env)
        elif args.command == "execute":
            if not rest:
                parser.error("name the notebooks to execute, e.g. notebooks/01_attention_in_numpy.ipynb")
            execute_notebooks(python, rest)
    except subprocess.CalledProcessError as error:
        return error.returncode
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
