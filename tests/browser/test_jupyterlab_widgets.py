"""Lesson 02's attention explorer as a learner meets it: in JupyterLab, in a browser, after Run All.

The unit tests in tests/test_widgets.py drive the explorers' Python side; this one checks what only a
real frontend shows: that JupyterLab's widget manager renders the explorer (not "Error displaying
widget" or "model not found", not the static fallback PNG), and that dragging the slider in the page
goes to the kernel and comes back as a new picture. Screenshots are saved as test artifacts.
"""
from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

pytestmark = pytest.mark.browser

LESSON = "notebooks/02_cross_modal_attention.ipynb"
WIDGET_ERRORS = ("error displaying widget", "model not found")
KERNEL_START_TIMEOUT_S = 120
RUN_ALL_TIMEOUT_S = 180
REDRAW_TIMEOUT_S = 30

# The lesson's panel, found through the app that --LabApp.expose_app_in_browser exposes: its kernel's
# status, the notebook as JSON (outputs and execution counts) and how many cells show "[*]".
NOTEBOOK_STATE_JS = """(path) => {
  const panel = Array.from(window.jupyterapp?.shell.widgets('main') ?? [])
    .find(widget => widget.context && widget.context.path === path);
  if (!panel || !panel.context.isReady) return null;
  const kernel = panel.sessionContext.session?.kernel;
  const prompts = Array.from(panel.node.querySelectorAll('.jp-InputPrompt'), node => node.textContent);
  return {kernel: kernel ? kernel.status : null, notebook: panel.context.model.toJSON(),
          running: prompts.filter(text => text.includes('*')).length};
}"""


def wait_for(page, condition, what: str, timeout: float):
    """Poll ``condition()`` until it returns something truthy; fail on timeout or on a dialog
    (a kernel chooser or an error message would otherwise just look like a hang)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        dialog = page.locator(".jp-Dialog")
        if dialog.count():
            pytest.fail(f"JupyterLab showed a dialog while waiting for {what}: {dialog.first.inner_text()!r}")
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:.0f} s for {what}")
        page.wait_for_timeout(250)


def _code_cells(notebook: dict) -> list[dict]:
    return [c for c in notebook["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]


def _forget_execution_counts(path: Path) -> None:
    """Blank the copy's stored execution counts (outputs stay), so a count seen later is this run's."""
    notebook = json.loads(path.read_text())
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["execution_count"] = None
            for output in cell["outputs"]:
                if "execution_count" in output:
                    output["execution_count"] = None
    path.write_text(json.dumps(notebook))


def _widget_errors(page) -> list[str]:
    """The widget manager's error texts shown anywhere in the notebook."""
    text = page.locator(".jp-NotebookPanel").inner_text().lower()
    return [error for error in WIDGET_ERRORS if error in text]


def _picture(png: bytes) -> np.ndarray:
    return imread(io.BytesIO(png), format="png")


def test_lesson_02_explorer_renders_in_jupyterlab_and_its_slider_redraws_the_picture(
        jupyterlab, lab_page, artifacts):
    lab = jupyterlab(LESSON)
    page = lab_page
    name = Path(LESSON).name
    _forget_execution_counts(lab.root / name)
    state = lambda: page.evaluate(NOTEBOOK_STATE_JS, name)  # noqa: E731

    page.goto(lab.url(f"lab/tree/{name}"))
    wait_for(page, lambda: (s := state()) and s["kernel"] == "idle",
             "the lesson to open and its kernel to start", KERNEL_START_TIMEOUT_S)
    # Before it runs, the (untrusted) notebook shows the explorer's stored PNG, never a widget error.
    explorer_cell = page.locator(".jp-CodeCell", has_text="explorer.show()")
    explorer_cell.locator(".jp-RenderedImage img").wait_for(state="visible")
    assert not _widget_errors(page)

    # Run > Run All Cells, as a learner does.
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    run_all = page.get_by_role("menuitem", name="Run All Cells", exact=True)
    assert run_all.get_attribute("aria-disabled") != "true", "Run All Cells is disabled"
    run_all.click()

    def all_cells_ran():
        s = state()
        if not s or s["kernel"] != "idle" or s["running"]:
            return None
        cells = _code_cells(s["notebook"])
        done = all(c["execution_count"] is not None for c in cells)
        failed = any(o["output_type"] == "error" for c in cells for o in c["outputs"])
        return s["notebook"] if done or failed else None

    notebook = wait_for(page, all_cells_ran, "Run All Cells to finish", RUN_ALL_TIMEOUT_S)
    errors = [o for c in _code_cells(notebook) for o in c["outputs"] if o["output_type"] == "error"]
    assert not errors, f"a cell raised {errors[0]['ename']}: {errors[0]['evalue']}"

    # The explorer is rendered by the widget manager, not replaced by its static PNG or an error.
    explorer = explorer_cell.locator(".jp-OutputArea-output > .jupyter-widgets.widget-vbox")
    explorer.first.wait_for(state="visible")
    assert explorer.count() == 1, "lesson 02 shows one explorer"
    assert explorer_cell.locator(".jp-RenderedImage").count() == 0, "the static PNG shows beside the widget"
    assert not _widget_errors(page)
    assert explorer.locator(".widget-dropdown select").input_value() == "red"
    assert explorer.locator(".widget-checkbox input").is_checked()
    slider = explorer.locator(".widget-slider")
    assert slider.locator(".widget-label").inner_text().strip() == "scale"
    readout = slider.locator(".widget-readout")
    assert readout.inner_text().strip() == "1.0"
    image = explorer.locator(".widget-image")
    wait_for(page, lambda: image.evaluate("img => img.complete && img.naturalWidth > 0"),
             "the explorer's picture to load", REDRAW_TIMEOUT_S)

    explorer.scroll_into_view_if_needed()
    page.screenshot(path=artifacts / "lesson-02-jupyterlab.png")
    explorer.screenshot(path=artifacts / "lesson-02-explorer-before.png")
    before_src, before = image.get_attribute("src"), image.screenshot()

    # Drag the scale handle to about 80% of its track (about 2.4): a sharper picture.
    handle = slider.locator(".noUi-handle").bounding_box()
    track = slider.locator(".noUi-base").bounding_box()
    y = handle["y"] + handle["height"] / 2
    page.mouse.move(handle["x"] + handle["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(track["x"] + 0.8 * track["width"], y, steps=10)
    page.mouse.up()

    wait_for(page, lambda: float(readout.inner_text()) >= 2.0, "the slider to move", REDRAW_TIMEOUT_S)
    wait_for(page, lambda: image.get_attribute("src") != before_src,
             "the kernel to send the redrawn picture", REDRAW_TIMEOUT_S)
    wait_for(page, lambda: image.evaluate("img => img.complete && img.naturalWidth > 0"),
             "the redrawn picture to load", REDRAW_TIMEOUT_S)
    after = image.screenshot()
    explorer.screenshot(path=artifacts / "lesson-02-explorer-after.png")

    old, new = _picture(before), _picture(after)
    changed = 1.0 if old.shape != new.shape else float(np.mean(np.any(old != new, axis=-1)))
    assert changed > 0.01, f"only {changed:.2%} of the picture's pixels changed after the slider moved"
    assert not _widget_errors(page)
