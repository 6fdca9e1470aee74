"""Every notebook opens with the Colab badge and set-up cell that crossmodal_edu.colab generates."""
import subprocess
import sys
from pathlib import Path

import nbformat

from crossmodal_edu import colab
from crossmodal_edu.lessons import course_notebooks, notebook_id

ROOT = Path(__file__).resolve().parents[1]


def test_every_notebook_opens_with_the_generated_badge_and_set_up_cell():
    problems = colab.differences(ROOT)
    assert not problems, "\n".join(problems) + "\nrun `python -m crossmodal_edu.colab sync`, then exercises build"


def test_each_badge_opens_its_own_notebook_from_the_one_repository_url():
    for folder in ("notebooks", "solutions", "exercises"):
        for path in course_notebooks(ROOT / folder):
            badge = nbformat.read(path, as_version=4).cells[0].source
            owner_repo = colab.REPOSITORY.removeprefix("https://github.com/")
            assert f"colab.research.google.com/github/{owner_repo}/blob/{colab.BRANCH}/{folder}/{path.name}" in badge


def test_the_set_up_cell_does_nothing_and_prints_nothing_off_colab():
    result = subprocess.run([sys.executable, "-c", colab.SETUP_SOURCE], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""


def test_the_set_up_cell_installs_without_dependencies_from_the_repository():
    assert "--no-deps" in colab.SETUP_SOURCE
    assert f"git+{colab.REPOSITORY}@{colab.BRANCH}" in colab.SETUP_SOURCE
    assert "enable_custom_widget_manager" in colab.SETUP_SOURCE
    assert "torch" not in colab.SETUP_SOURCE.split("missing = ")[1].split("]")[0]   # never reinstalled


def test_sync_is_idempotent_and_replaces_an_outdated_header(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 09 · A lesson", id="t")])
    path = tmp_path / "notebooks" / "09_a_lesson.ipynb"
    path.write_text(nbformat.writes(nb))
    assert colab.sync(tmp_path) == [path.resolve()]
    assert colab.sync(tmp_path) == []
    assert colab.differences(tmp_path, ["notebooks"]) == []
    monkeypatch.setattr(colab, "REPOSITORY", "https://github.com/someone/fork")
    assert colab.differences(tmp_path, ["notebooks"])           # the URL moved: the check notices
    colab.sync(tmp_path)
    cells = nbformat.read(path, as_version=4).cells
    assert "someone/fork/blob/main/notebooks/09_a_lesson.ipynb" in cells[0].source
    assert [c.source for c in cells[2:]] == ["# 09 · A lesson"] and len(cells) == 3


def test_the_exercise_generator_carries_the_cells_and_points_the_badge_at_the_exercise(tmp_path):
    # lesson 01: the build stamps nbgrader metadata from a lesson's task specs, so the lesson must have some
    (tmp_path / "solutions").mkdir()
    solution = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Exercises 01 · x", id="t")])
    colab.apply(solution, "solutions/01_x.ipynb")
    (tmp_path / "solutions" / "01_x.ipynb").write_text(nbformat.writes(solution))
    from crossmodal_edu.exercises import build
    (written,) = build(tmp_path / "solutions", tmp_path / "exercises")
    cells = nbformat.read(written, as_version=4).cells
    assert "/blob/main/exercises/01_x.ipynb" in cells[0].source
    assert cells[1].source == colab.SETUP_SOURCE and colab.is_generated(cells[1])
    assert colab.differences(tmp_path, ["solutions", "exercises"]) == []


def test_readme_colab_badges_follow_the_repository_setting_and_cover_every_lesson():
    import re
    from pathlib import Path

    from crossmodal_edu import colab

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    prefix = colab.badge_source("").split("(", 2)[-1].rstrip(")")  # the badge's link, without a path
    links = re.findall(r"\]\((https://colab\.research\.google\.com/github/[^)]+)\)", readme)
    assert links, "the README has no Colab badges"
    for link in links:
        assert link.startswith(prefix), f"{link} does not follow REPOSITORY/BRANCH ({prefix})"
        assert (root / link[len(prefix):]).exists(), f"{link} points at no notebook"
    for lesson in course_notebooks(root / "notebooks"):
        assert f"{prefix}notebooks/{lesson.name}" in links, f"no Colab badge for {lesson.name} in README"


def test_the_set_up_cell_shows_as_one_titled_line_on_colab_and_in_jupyterlab():
    for folder in ("notebooks", "solutions", "exercises"):
        for path in course_notebooks(ROOT / folder):
            setup = nbformat.read(path, as_version=4).cells[1]
            assert setup.source.splitlines()[0].startswith("#@title "), f"{path.name}: Colab's form needs #@title first"
            assert setup.metadata.get("cellView") == "form", path.name
            assert setup.metadata.get("jupyter", {}).get("source_hidden") is True, path.name
