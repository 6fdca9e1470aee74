"""Every cell that draws has its picture in the committed notebook.

Lessons are read on GitHub without running them, so a figure that is not stored is a figure the
reader never sees. Figures go missing silently: a notebook executed with a non-inline matplotlib
backend (``MPLBACKEND=Agg``, which ``course.py test`` sets for pytest) runs every plotting cell
without error and stores no image, and nbval's lax mode does not compare images. This test reads the
committed files only; ``course.py execute`` is what writes them (with the inline backend, whatever the
caller's environment says).
"""
import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "solutions").glob("*.ipynb"))

# Calls that put a matplotlib figure on screen: pyplot itself, Axes methods that only make sense on a
# figure, and the course's plotting helpers (each returns the Axes/Figure it drew and leaves showing
# it to Jupyter).
DRAWING_CALLS = re.compile(
    r"\bplt\.(show|subplots|subplot|figure|plot|imshow|bar|barh|hist|scatter|matshow)\s*\("
    r"|\bfig(ure)?\.show\s*\("
    r"|\bdisplay\s*\(\s*fig"
    r"|\.(imshow|matshow|pcolormesh|errorbar)\s*\("
    r"|\b(plot_attention|show_attention_on_image|show_word_maps|show_images|plot_history)\s*\("
)


def _source(cell) -> str:
    return "".join(cell["source"])


def _code_without_comments_and_strings(source: str) -> str:
    """The source with comments and string literals blanked, so that prose about ``plt.show()``
    inside a string or a comment does not count as drawing."""
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    source = "\n".join(lines)
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return re.sub(r"#.*", "", source)
    pieces = source.splitlines(keepends=True)
    offsets = [0]
    for piece in pieces:
        offsets.append(offsets[-1] + len(piece))
    chars = list(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and hasattr(node, "end_lineno"):
            start = offsets[node.lineno - 1] + node.col_offset
            end = offsets[node.end_lineno - 1] + node.end_col_offset
            chars[start:end] = " " * (end - start)
    return re.sub(r"#.*", "", "".join(chars))


def _drawing_functions(cells) -> set[str]:
    """Names of functions a notebook defines whose body draws (a lesson's own plotting helper)."""
    names: set[str] = set()
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        try:
            tree = ast.parse("\n".join(l for l in _source(cell).splitlines()
                                       if not l.lstrip().startswith(("%", "!"))))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                body = ast.get_source_segment(_source(cell), node) or ""
                if DRAWING_CALLS.search(_code_without_comments_and_strings(body)):
                    names.add(node.name)
    return names


def drawing_cells_without_a_picture(path: Path) -> list[int]:
    """0-based indices of executed code cells that draw a figure but store no ``image/png``."""
    cells = json.loads(path.read_text())["cells"]
    helpers = _drawing_functions(cells)
    helper_call = re.compile(r"\b(" + "|".join(map(re.escape, sorted(helpers))) + r")\s*\(") if helpers else None
    missing = []
    for index, cell in enumerate(cells):
        if cell["cell_type"] != "code" or cell.get("execution_count") is None:
            continue
        code = _code_without_comments_and_strings(_source(cell))
        # A cell that only defines a helper draws nothing until the helper is called.
        calls_outside_defs = re.sub(r"(?ms)^def .*?(?=^\S|\Z)", "", code)
        draws = DRAWING_CALLS.search(calls_outside_defs) or (helper_call and helper_call.search(calls_outside_defs))
        if not draws:
            continue
        if not any("image/png" in output.get("data", {}) for output in cell.get("outputs", [])):
            missing.append(index)
    return missing


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_drawing_cell_has_its_figure_stored(path):
    missing = drawing_cells_without_a_picture(path)
    assert not missing, (
        f"cells {missing} (0-based) draw a figure but store no image: re-execute with "
        f"`python3 course.py execute {path.relative_to(ROOT)}` (it uses the inline backend)")


def test_the_check_sees_a_missing_figure_and_accepts_a_stored_one(tmp_path):
    def notebook(outputs):
        cell = {"cell_type": "code", "execution_count": 1, "metadata": {}, "outputs": outputs,
                "source": ["fig, ax = plt.subplots()\n", "ax.plot([1, 2])\n", "plt.show()"]}
        prose = {"cell_type": "code", "execution_count": 2, "metadata": {}, "outputs": [],
                 "source": ["# plt.show() is what draws\n", "print('plt.show()')"]}
        helper = {"cell_type": "code", "execution_count": 3, "metadata": {}, "outputs": [],
                  "source": ["def draw(x):\n", "    plt.imshow(x)\n"]}
        call = {"cell_type": "code", "execution_count": 4, "metadata": {}, "outputs": outputs,
                "source": ["draw(image)"]}
        file = tmp_path / "nb.ipynb"
        file.write_text(json.dumps({"cells": [cell, prose, helper, call], "metadata": {},
                                    "nbformat": 4, "nbformat_minor": 5}))
        return file

    assert drawing_cells_without_a_picture(notebook([])) == [0, 3]
    picture = [{"output_type": "display_data", "data": {"image/png": "iVBOR", "text/plain": "<Figure>"},
                "metadata": {}}]
    assert drawing_cells_without_a_picture(notebook(picture)) == []


def test_course_execute_stores_figures_even_when_the_caller_asks_for_agg(tmp_path, monkeypatch):
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("course_script", ROOT / "course.py")
    course = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(course)
    cell = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
            "source": ["import matplotlib.pyplot as plt\n", "plt.plot([0, 1], [1, 0])\n", "plt.show()"]}
    file = tmp_path / "draws.ipynb"
    file.write_text(json.dumps({"cells": [cell], "metadata": {"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5}))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    course.execute_notebooks(sys.executable, [str(file)])
    assert drawing_cells_without_a_picture(file) == []
    outputs = json.loads(file.read_text())["cells"][0]["outputs"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
