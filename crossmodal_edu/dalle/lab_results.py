"""The conditioning lab's results: read, summarise and draw them (lesson 06, section 8).

``benchmarks/conditioning_lab.py`` trains every design of ``build_decoder`` at equal parameters,
steps and batches over 3 seeds and appends one JSON line per finished run to ``RESULTS`` (it ships
with the package, so the lesson can draw it on Colab too). This module is the one place that turns
those lines into rows: the learning rate each design won on its validation prompts, then mean,
sample standard deviation and standard error over the training seeds at that rate.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[1] / "results" / "conditioning_lab_cpu.jsonl"
"""The committed results of the CPU runs (one JSON line per finished training run)."""

LRS: tuple[float, ...] = (1.5e-3, 3e-3, 6e-3)
"""The learning rates every design tries on seed 0 before its other seeds."""
FLOOR = "none"
FLOOR_LR = 3e-3
"""The no-text floor is trained once, at this rate, without a search."""
OUTSIDE = "dalle-pytorch"
TOKEN_SHIFT = "+token-shift"
"""Suffix of a design run with ``DecoderConfig(token_shift=True)`` (the outside row's lead was mostly its token shift)."""
ORDER: tuple[str, ...] = ("cross-attention", "cross-attention" + TOKEN_SHIFT, "joint", "mmdit", "adaln", "single-stream",
                          "single-stream" + TOKEN_SHIFT, FLOOR, OUTSIDE)
"""The order of the rows (the course's designs, the floor, then the outside row)."""
COLUMNS: tuple[tuple[str, str], ...] = (
    ("one object", "tier1_all"), ("held-out", "held_out_all"), ("two objects", "tier2_all"), ("relation", "tier2_relation"))
"""(label, key) of the four numbers each row reports: the share of test prompts drawn fully right
(one object with a seen colour-shape pair, one with a held-out pair, two objects and their
relation), and how often the relation alone was right on two-object prompts."""


def design_name(config) -> str:
    """A decoder config's design as the lab names it: ``"single-stream+token-shift"``, ``"joint"``."""
    return config.conditioning + (TOKEN_SHIFT if config.token_shift else "")


def read_lines(path: str | Path = RESULTS) -> list[dict[str, Any]]:
    """Every JSON line of ``path`` (none if it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path) as file:
        return [json.loads(text) for text in file if text.strip()]


def mean_sd(values: list[float]) -> dict[str, Any]:
    """``{"mean", "sd", "se", "n"}``: the sample standard deviation (n - 1) and the standard error
    of the mean (sd / sqrt(n)), None for fewer than two values."""
    n = len(values)
    if n == 0:
        return {"mean": None, "sd": None, "se": None, "n": 0}
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"mean": mean, "sd": sd, "se": None if sd is None else sd / math.sqrt(n), "n": n}


def chosen_lr(lines: list[dict[str, Any]], design: str, steps: int) -> float | None:
    """The lr of ``design``'s best seed-0 run at ``steps`` by validation score, once all of ``LRS`` are in."""
    tried = {line["lr"]: line["validation"]["score"] for line in lines
             if line["design"] == design and line["seed"] == 0 and line["steps"] == steps}
    if design == FLOOR:
        return FLOOR_LR if FLOOR_LR in tried else None
    if not all(lr in tried for lr in LRS):
        return None
    return max(LRS, key=lambda lr: tried[lr])


def _cpu_s_per_step(line: dict[str, Any]) -> float:
    # CPU seconds, not wall seconds: a run that shared its core, or whose machine was suspended
    # for an hour, has a long wall time but the same CPU time.
    return line.get("train_cpu_s", line["s_per_step"] * line["steps"]) / line["steps"]


def summarise(path: str | Path = RESULTS) -> list[dict[str, Any]]:
    """One row per (design, steps, guidance scale): the runs at the design's chosen lr (every
    training seed that is in), each metric as ``{"mean", "sd", "se", "n"}`` over those seeds.

    Keys: ``design``, ``steps``, ``scale``, ``lr``, ``lr_final`` (False while the lr phase is
    unfinished: the row then holds the best seed-0 run so far), ``params``, ``seeds``,
    ``cpu_s_per_step``, ``tier1_all``, ``held_out_all``, ``tier2_all``, ``tier2_relation``,
    ``per_seed`` (each metric's values, in seed order), ``steps_to_target`` and
    ``cpu_s_to_target`` (over the seeds that reached it; ``reached`` says how many did),
    ``test_prompts`` (per kind), ``curves`` (per seed, in seed order, the two-object curve on the
    validation prompts: ``{"step", "cpu_s", "tier2_all"}`` every few hundred steps).
    """
    lines = read_lines(path)
    rows = []
    groups = sorted({(line["design"], line["steps"]) for line in lines},
                    key=lambda g: (ORDER.index(g[0]) if g[0] in ORDER else len(ORDER), g[1]))
    for design, steps in groups:
        lr = chosen_lr(lines, design, steps)
        final = lr is not None
        if lr is None:
            seed0 = [line for line in lines if line["design"] == design and line["steps"] == steps and line["seed"] == 0]
            if not seed0:
                continue
            lr = max(seed0, key=lambda line: line["validation"]["score"])["lr"]
        runs = sorted((line for line in lines if line["design"] == design and line["steps"] == steps and line["lr"] == lr),
                      key=lambda line: line["seed"])
        scales = sorted({key for line in runs for key in line["test"]}, key=lambda k: float(k[1:]))
        for scale in scales:
            scored = [line for line in runs if scale in line["test"]]
            reached = [line for line in scored if line["steps_to_target"] is not None]
            rows.append({
                "design": design, "steps": steps, "scale": float(scale[1:]), "lr": lr, "lr_final": final,
                "params": scored[0]["params"], "seeds": [line["seed"] for line in scored],
                "cpu_s_per_step": mean_sd([_cpu_s_per_step(line) for line in scored]),
                **{key: mean_sd([line["test"][scale][key] for line in scored]) for _, key in COLUMNS},
                "per_seed": {key: [line["test"][scale][key] for line in scored] for _, key in COLUMNS},
                "steps_to_target": mean_sd([line["steps_to_target"] for line in reached]),
                "cpu_s_to_target": mean_sd([line["cpu_s_to_target"] for line in reached]),
                "reached": f"{len(reached)}/{len(scored)}",
                "test_prompts": scored[0]["test_settings"]["n"],
                "curves": [[{key: point[key] for key in ("step", "cpu_s", "tier2_all")} for point in line.get("curve", [])]
                           for line in scored],
            })
    return rows


def _cell(stat: dict[str, Any], percent: bool = True, digits: int = 1) -> str:
    if stat["mean"] is None:
        return "-"
    scale = 100 if percent else 1
    sd = "" if stat["sd"] is None else f" ± {stat['sd'] * scale:.{digits}f}"
    se = "" if stat["se"] is None else f", se {stat['se'] * scale:.{digits}f}"
    return f"{stat['mean'] * scale:.{digits}f}{sd} (n={stat['n']}{se})"


def report_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (percentages; mean ± sd over training seeds, n seeds, standard error)."""
    header = ["design", "guidance", "params", "lr", "CPU s/step", *[name for name, _ in COLUMNS],
              "steps to 80% two-obj", "CPU s to 80%"]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        out.append("| " + " | ".join([
            row["design"], f"{row['scale']:g}", f"{row['params']:,}",
            f"{row['lr']:g}" + ("" if row["lr_final"] else " (lr phase unfinished)"),
            _cell(row["cpu_s_per_step"], percent=False, digits=3),
            *[_cell(row[key]) for _, key in COLUMNS],
            _cell(row["steps_to_target"], percent=False, digits=0) + f", reached {row['reached']}",
            _cell(row["cpu_s_to_target"], percent=False, digits=0),
        ]) + " |")
    return "\n".join(out)


def plot_results(rows: list[dict[str, Any]], scales: tuple[float, ...] | None = None):
    """Grouped bars, one group per metric and one bar per design, with the mean over training seeds,
    an error bar of one sample standard deviation, and every seed as a dot; one panel per guidance
    scale. Returns the figure."""
    import matplotlib.pyplot as plt

    scales = tuple(sorted({row["scale"] for row in rows})) if scales is None else scales
    fig, axes = plt.subplots(1, len(scales), figsize=(6.2 * len(scales), 4.6), squeeze=False, sharey=True)
    for ax, scale in zip(axes[0], scales):
        panel = [row for row in rows if row["scale"] == scale]
        width = 0.8 / max(len(panel), 1)
        for i, row in enumerate(panel):
            xs = [j + (i - (len(panel) - 1) / 2) * width for j in range(len(COLUMNS))]
            means = [100 * row[key]["mean"] for _, key in COLUMNS]
            sds = [100 * (row[key]["sd"] or 0) for _, key in COLUMNS]
            n = row[COLUMNS[0][1]]["n"]
            shifted = row["design"].endswith(TOKEN_SHIFT)  # hatched: the same design with token shift on
            ax.bar(xs, means, width, yerr=sds, capsize=2, edgecolor="white", hatch="///" if shifted else None,
                   label=f"{row['design']} ({n} seed{'s' * (n != 1)})")
            for x, (_, key) in zip(xs, COLUMNS):
                values = [100 * v for v in row["per_seed"][key]]
                ax.plot([x] * len(values), values, "o", ms=2.5, color="black", alpha=0.6)
        ax.set_xticks(range(len(COLUMNS)), [name for name, _ in COLUMNS])
        ax.set_ylim(0, 100)
        ax.set_ylabel("test prompts right (%)")
        ax.set_title(f"guidance {scale:g}")
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    rows_of_legend = -(-len(labels) // 4)  # four designs per legend row, below the panels (not over any bar)
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False)
    fig.suptitle("Equal parameters, steps and batches: mean ± sd over training seeds (dots: each seed)", fontsize=10)
    fig.tight_layout(rect=(0, 0.05 * rows_of_legend, 1, 1))
    return fig


def text_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a plain-text table for a notebook: mean ± sd over training seeds (a bare mean
    when only one seed is in), the seeds counted, CPU seconds per training step."""
    def cell(stat: dict[str, Any]) -> str:
        if stat["mean"] is None:
            return "-"
        return f"{100 * stat['mean']:.1f}" + ("" if stat["sd"] is None else f" ± {100 * stat['sd']:.1f}")

    names = [name for name, _ in COLUMNS]
    width = max([len("design")] + [len(row["design"]) + 1 for row in rows]) + 1
    lines = [f"{'design':{width}s}{'guidance':>9s}{'seeds':>6s}" + "".join(f"{name:>14s}" for name in names) + f"{'CPU s/step':>12s}"]
    for row in rows:
        design = row["design"] + ("" if row["lr_final"] else "*")
        lines.append(f"{design:{width}s}{row['scale']:>9g}{len(row['seeds']):>6d}"
                     + "".join(f"{cell(row[key]):>14s}" for _, key in COLUMNS)
                     + f"{row['cpu_s_per_step']['mean']:>12.3f}")
    if not all(row["lr_final"] for row in rows):
        lines.append("* its learning-rate search is unfinished: the best of the rates tried so far")
    return "\n".join(lines)
