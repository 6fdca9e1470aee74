"""The part of the Colab-stack check that runs inside the pinned environment (started by run.py).

It checks that the kernel really is the environment's, runs every notebook with nbclient (the
pinned 0.10.4) and checks what each one showed, then runs tests/test_widgets.py under pytest. It
prints one line per notebook and exits 1 if anything failed. See run.py's docstring for what is
checked and why.
"""
from __future__ import annotations

import argparse
import configparser
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import PINS, colab_source  # noqa: E402  (run.py is the standard-library half of this check)

FOLDERS = ("notebooks", "exercises", "solutions")
#: Failures on Colab that belong to a lesson and are not fixed yet: notebook -> (text every one of its
#: problems contains, why). Such a notebook is reported as KNOWN and does not fail the run; any other
#: problem in it does, and so does its passing (then delete its line: the check stays strict).
KNOWN_FAILURES: dict[str, tuple[str, str]] = {}
CHECK_MARK = "# NBVAL_CHECK_OUTPUT"
# What a kernel must report: the versions that matter most for the course, as pinned.
KERNEL_MODULES = ("IPython", "ipykernel", "ipywidgets", "jupyter_client", "matplotlib", "nbformat", "numpy",
                  "torch", "tqdm")


def _pins() -> dict[str, str]:
    pins = {}
    for line in PINS.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def _notebook_ids(folder: Path) -> list[Path]:
    from crossmodal_edu.lessons import course_notebooks   # the installed package's definition

    return course_notebooks(folder)


def _sanitizers(root: Path) -> list[tuple[re.Pattern, str]]:
    config = configparser.ConfigParser(interpolation=None)
    config.read(root / "tests" / "nbval_sanitize.cfg")
    return [(re.compile(config[s]["regex"]), config[s]["replace"]) for s in config.sections()]


def _shown_text(cell, sanitizers) -> str:
    """What a checked cell printed, as nbval compares it: streams (consecutive pieces of one stream
    joined) and plain-text results, sanitized."""
    pieces: list[list[str]] = []   # [kind, text]
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            kind, text = out["name"], out["text"]
        elif out["output_type"] in ("execute_result", "display_data") and "text/plain" in out.get("data", {}):
            kind, text = "result", out["data"]["text/plain"]
        elif out["output_type"] == "error":
            kind, text = "error", f"{out['ename']}: {out['evalue']}"
        else:
            continue
        text = "".join(text) if isinstance(text, list) else text
        if pieces and kind != "result" and pieces[-1][0] == kind:
            pieces[-1][1] += text
        else:
            pieces.append([kind, text])
    shown = "\n".join(f"[{kind}]\n{text}" for kind, text in pieces)
    for pattern, replacement in sanitizers:
        shown = pattern.sub(replacement, shown)
    return shown


def _first_difference(expected: str, got: str) -> str:
    for i, (a, b) in enumerate(zip(expected.splitlines(), got.splitlines())):
        if a != b:
            return f"line {i + 1}: committed {a.strip()[:140]!r}, here {b.strip()[:140]!r}"
    return f"committed {len(expected.splitlines())} lines, here {len(got.splitlines())}"


def kernel_report(prefix: str) -> list[str]:
    """Problems with the kernel nbclient starts: not the environment's Python, or other versions."""
    code = ("import importlib, json, sys\n"
            f"mods = {KERNEL_MODULES!r}\n"
            "print(json.dumps({'prefix': sys.prefix, 'python': sys.version.split()[0],\n"
            "                  **{m: importlib.import_module(m).__version__ for m in mods}}))")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    seen = json.loads(nb.cells[0].outputs[0]["text"])
    print("[colab-stack] kernel:", ", ".join(f"{k} {v}" for k, v in seen.items()), flush=True)
    problems = []
    if os.path.realpath(seen["prefix"]) != os.path.realpath(prefix):
        problems.append(f"the kernel runs in {seen['prefix']}, not in the environment {prefix}")
    pins = _pins()
    for module in KERNEL_MODULES:
        want = pins[module.lower().replace("_", "-")]
        if seen[module] != want:
            problems.append(f"the kernel has {module} {seen[module]}, pins.txt says {want}")
    return problems


def _children_cpu() -> float:
    """CPU seconds used by this process's finished children (the kernels): a cost that, unlike the
    wall time, does not grow when other jobs share the machine."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_notebook(path: str, root: str, wheel: str) -> dict:
    """Execute one notebook as Colab would and list what went wrong (an empty list: it passed)."""
    path, root = Path(path), Path(root)
    rel = path.relative_to(root).as_posix()
    committed = nbformat.read(path, as_version=4)
    nb = nbformat.read(path, as_version=4)
    problems = []
    setup = [c for c in nb.cells if c.get("id") == "colab-setup"]
    if len(setup) != 1:
        return {"path": rel, "seconds": 0.0, "cpu": 0.0, "problems": ["no generated set-up cell (id colab-setup)"]}
    setup[0].source = colab_source(setup[0].source, Path(wheel))
    start, cpu_start = time.perf_counter(), _children_cpu()
    with tempfile.TemporaryDirectory(prefix="content-") as content:   # Colab starts in an empty /content
        client = NotebookClient(nb, timeout=900, kernel_name="python3", record_timing=False,
                                resources={"metadata": {"path": content}})
        try:
            client.execute()
        except CellExecutionError as error:
            problems.append("a cell raised:\n" + str(error)[-2500:])
    seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu_start
    shown = "".join(o.get("text", "") for o in setup[0].outputs if o["output_type"] == "stream")
    if not problems and "crossmodal_edu installed" not in shown:
        problems.append(f"the set-up cell did not say that it installed the course: {shown[-300:]!r}")
    sanitizers = _sanitizers(root)
    for i, (old, new) in enumerate(zip(committed.cells, nb.cells)):
        if new.cell_type != "code" or not new.source.lstrip().startswith(CHECK_MARK) or not old.get("outputs"):
            continue
        expected, got = _shown_text(old, sanitizers), _shown_text(new, sanitizers)
        if expected != got and not problems:
            problems.append(f"cell {i} (# NBVAL_CHECK_OUTPUT) shows something else than its committed output: "
                            + _first_difference(expected, got))
    if path.parent.name in ("exercises", "solutions") and not problems:
        board = "".join(o.get("data", {}).get("text/plain", "") + o.get("text", "") for o in nb.cells[-1].outputs)
        total = re.search(r"Total: (\d+)/(\d+) points", board)
        if not total:
            problems.append(f"the last cell shows no scoreboard: {board[-300:]!r}")
        elif path.parent.name == "solutions" and total.group(1) != total.group(2):
            problems.append(f"the solution does not get full marks: {total.group(0)}")
        elif path.parent.name == "exercises" and total.group(1) != "0":
            problems.append(f"the unanswered exercise scores points: {total.group(0)}")
    return {"path": rel, "seconds": seconds, "cpu": cpu, "problems": problems}


def run_widget_tests(root: Path) -> int:
    """tests/test_widgets.py under pytest, against the installed package (not the checkout)."""
    with tempfile.TemporaryDirectory(prefix="widgets-") as tmp:
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", os.devnull,
               "--rootdir", tmp, str(root / "tests" / "test_widgets.py")]
        print("[colab-stack] $ pytest tests/test_widgets.py", flush=True)
        return subprocess.run(cmd, cwd=tmp).returncode


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--wheel", required=True)
    parser.add_argument("--stub-log", type=Path, required=True)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    root = args.root.resolve()

    import crossmodal_edu

    failures = []
    if not Path(crossmodal_edu.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()):
        failures.append(f"crossmodal_edu is imported from {crossmodal_edu.__file__}, not from the environment")
    failures += kernel_report(sys.prefix)

    paths = ([p.resolve() for p in args.notebooks] if args.notebooks
             else [p for folder in FOLDERS for p in _notebook_ids(root / folder)])
    # The later lessons take longest: start them first, so that the short ones fill in beside them.
    paths.sort(key=lambda p: (p.parent.name != "notebooks", [-ord(c) for c in p.name]))
    print(f"[colab-stack] running {len(paths)} notebooks, {args.jobs} at a time", flush=True)
    calls_before = len(args.stub_log.read_text().splitlines()) if args.stub_log.exists() else 0
    results, notebooks_start = [], time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(run_notebook, str(p), str(root), args.wheel) for p in paths]
        for future in as_completed(futures):
            result = future.result()
            results.append(result)
            problems, known = result["problems"], KNOWN_FAILURES.get(result["path"])
            expected = bool(known and problems and all(known[0] in problem for problem in problems))
            status = "KNOWN" if expected else "ok" if not problems else "FAILED"
            print(f"[colab-stack] {status:6} {result['seconds']:6.1f} s wall {result['cpu']:6.1f} s CPU  "
                  f"{result['path']}", flush=True)
            if expected:
                print(f"    a known failure, not fixed yet: {known[1]}", flush=True)
            for problem in problems:
                print("    " + problem.replace("\n", "\n    "), flush=True)
                if not expected:
                    failures.append(f"{result['path']}: {problem.splitlines()[0]}")
            if known and not problems:
                failures.append(f"{result['path']} passes now: delete its line from KNOWN_FAILURES in "
                                "tests/colab_stack/inside.py")
    print(f"[colab-stack] notebooks: {time.perf_counter() - notebooks_start:.0f} s wall, "
          f"{sum(r['cpu'] for r in results):.0f} s CPU in their kernels", flush=True)
    calls = len(args.stub_log.read_text().splitlines()) if args.stub_log.exists() else 0
    if calls - calls_before != len(paths):
        failures.append(f"google.colab.output.enable_custom_widget_manager() was called {calls - calls_before} "
                        f"times for {len(paths)} notebooks")
    widgets_start = time.perf_counter()
    if run_widget_tests(root) != 0:
        failures.append("tests/test_widgets.py failed on this stack (output above)")
    print(f"[colab-stack] widget tests: {time.perf_counter() - widgets_start:.0f} s", flush=True)
    for failure in failures:
        print(f"[colab-stack] FAILED: {failure}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
