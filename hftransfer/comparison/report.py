"""The report of a comparison, rendered from ``DIR/results.json`` alone.

``hftransfer compare`` writes ``results.json`` (the grid it planned and one entry per finished
cell: arm × labels per class × seed); :func:`render_report` turns it into ``report.md``,
``report.html`` (self-contained: inline CSS and SVG, nothing fetched) and ``plots/*.svg``. It
reads nothing else, so ``hftransfer report DIR`` re-renders the same bytes at any time, and a
partial grid (an interrupted comparison) renders too: the report says how many cells are in.

Every number comes from :func:`summarize`, which the templates only format (metrics in [0, 1]
as percent with one decimal, others with four decimals), so a test can check the report
against the cells. Model selection used the validation split; the headline numbers are on the
test split, read once per cell (on validation, said so, when the recipe has no test split).
"""
from __future__ import annotations

import io
import math
import re
from importlib import resources
from pathlib import Path
from typing import Any

from .. import rundir
from ..errors import HFTransferError
from .stats import ALPHA, CONFIDENCE, compare_paired, differences, mean_ci

RESULTS = "results.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
PLOTS = "plots"
PLOT_NAMES = ("data-efficiency", "params", "cost")
"""The plots, each ``plots/NAME.svg`` and inline in the HTML, in the order the report shows them."""
LOWER_IS_BETTER = ("loss", "perplexity", "error", "mse", "mae", "rmse", "wer", "cer")
"""Metric names (or parts of them) for which smaller is better; every other metric is a score."""
COST_FIELDS = ("wall_s", "peak_rss_mb", "samples_per_second", "trainable_params", "total_params",
               "n_train", "epochs", "steps")
# One colour per arm, in display order (tab10, fixed so the plots do not depend on an rc file).
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


# --------------------------------------------------------------------------- reading results.json


def load_results(directory: str | Path) -> dict[str, Any]:
    """``DIR/results.json``, checked: a missing, unreadable or ill-formed file is one
    :class:`HFTransferError` line saying what is wrong and what to do."""
    path = Path(directory) / RESULTS
    if not path.is_file():
        raise HFTransferError(f"{str(path)!r} not found: give the directory `hftransfer compare` wrote "
                              "(it holds results.json), or run the comparison first")
    data = rundir.read_json(path)
    if data is None:
        raise HFTransferError(f"{str(path)!r} is not readable JSON (broken or truncated); run "
                              "`hftransfer compare` again into that directory to rewrite it")
    problem = _problem(data)
    if problem:
        raise HFTransferError(f"{str(path)!r} is not a comparison's results file: {problem}; run "
                              "`hftransfer compare` again into that directory to rewrite it")
    return data


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _problem(data: Any) -> str | None:
    """What is wrong with a results.json's content, or None."""
    if not isinstance(data, dict) or not isinstance(data.get("comparison"), dict) \
            or not isinstance(data.get("cells"), list):
        return "expected an object with 'comparison' (an object) and 'cells' (a list)"
    comp = data["comparison"]
    if not isinstance(comp.get("metric"), str) or not comp["metric"]:
        return "comparison.metric must be a metric name"
    arms = comp.get("arms")
    if not isinstance(arms, list) or not arms \
            or not all(isinstance(a, dict) and isinstance(a.get("name"), str) for a in arms):
        return "comparison.arms must be a non-empty list of objects with a 'name'"
    names = [a["name"] for a in arms]
    if len(set(names)) != len(names):
        return "comparison.arms names the same arm twice"
    budgets, seeds = comp.get("budgets"), comp.get("seeds")
    if not isinstance(budgets, list) or not budgets or not all(
            b == "all" or (_is_int(b) and b > 0) for b in budgets) or len(set(budgets)) != len(budgets):
        return "comparison.budgets must be distinct positive integers or \"all\""
    if not isinstance(seeds, list) or not seeds or not all(_is_int(s) for s in seeds) \
            or len(set(seeds)) != len(seeds):
        return "comparison.seeds must be a list of distinct integers"
    if comp.get("baseline") is not None and comp["baseline"] not in names:
        return f"comparison.baseline {comp['baseline']!r} is not one of the arms"
    for key in ("metrics", "labels", "notes"):
        if key in comp and not isinstance(comp[key], list):
            return f"comparison.{key} must be a list"
    seen = set()
    for i, cell in enumerate(data["cells"]):
        if not isinstance(cell, dict):
            return f"cells[{i}] is not an object"
        key = (cell.get("arm"), cell.get("budget"), cell.get("seed"))
        if key[0] not in names or key[1] not in budgets or not _is_int(key[2]) or key[2] not in seeds:
            return f"cells[{i}] (arm {key[0]!r}, budget {key[1]!r}, seed {key[2]!r}) is not in the grid"
        if key in seen:
            return f"cells[{i}] repeats arm {key[0]!r}, budget {key[1]!r}, seed {key[2]!r}"
        seen.add(key)
        if not isinstance(cell.get("validation"), dict):
            return f"cells[{i}] has no 'validation' scores (an object of metric: value)"
        if cell.get("test") is not None and not isinstance(cell["test"], dict):
            return f"cells[{i}].test must be an object of metric: value (or absent)"
    return None


# --------------------------------------------------------------------------- the numbers


def _number(value: Any) -> float | None:
    """A finite number (a metric of a cell), or None (missing, null, text, a bool)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


class _Grid:
    """The cells of a comparison by arm and budget (then seed), and what is read off them."""

    def __init__(self, cells: list[dict[str, Any]], n_labels: int) -> None:
        self.cells: dict[tuple[str, Any], dict[int, dict[str, Any]]] = {}
        for cell in cells:
            self.cells.setdefault((cell["arm"], cell["budget"]), {})[cell["seed"]] = cell
        self.n_labels = n_labels

    def values(self, arm: str, budget: Any, split: str, metric: str) -> dict[int, float]:
        """A metric of each seed that has it, by seed (in seed order)."""
        out = {}
        for seed, cell in sorted(self.cells.get((arm, budget), {}).items()):
            value = _number((cell.get(split) or {}).get(metric))
            if value is not None:
                out[seed] = value
        return out

    def mean(self, arm: str, budget: Any, field: str) -> float | None:
        """The mean of a cell field (wall_s, n_train...) over the seeds that have it."""
        found = [v for c in self.cells.get((arm, budget), {}).values()
                 if (v := _number(c.get(field))) is not None]
        return sum(found) / len(found) if found else None

    def x(self, arm: str, budget: Any) -> float | None:
        """Labels per class: the budget, or for "all" the arm's n_train over the labels."""
        if budget != "all":
            return float(budget)
        n_train = self.mean(arm, budget, "n_train")
        return n_train / self.n_labels if n_train and self.n_labels else None

    def count(self, arm: str, budget: Any) -> int:
        return len(self.cells.get((arm, budget), {}))


def _score_rows(grid: _Grid, arms: list[str], budgets: list[Any], split: str,
                metric: str) -> list[dict[str, Any]]:
    rows = []
    for arm in arms:
        for budget in budgets:
            got = grid.values(arm, budget, split, metric)
            ci = mean_ci(list(got.values()))
            rows.append({"arm": arm, "budget": budget, "label": str(budget), "x": grid.x(arm, budget),
                         "seeds": list(got), "values": list(got.values()), "n": ci.n,
                         "mean": ci.mean, "std": ci.std, "ci_low": ci.low, "ci_high": ci.high})
    return rows


def _gain_rows(grid: _Grid, arms: list[str], budgets: list[Any], baseline: str, split: str, metric: str,
               lower: bool) -> list[dict[str, Any]]:
    rows = []
    for arm in (a for a in arms if a != baseline):
        for budget in budgets:
            mine, base = grid.values(arm, budget, split, metric), grid.values(baseline, budget, split, metric)
            shared = [s for s in mine if s in base]  # paired by seed: same seed, same labelled examples
            ci = mean_ci(list(differences([mine[s] for s in shared], [base[s] for s in shared])))
            rows.append({"arm": arm, "budget": budget, "label": str(budget), "seeds": shared, "n": ci.n,
                         "mean": ci.mean, "std": ci.std, "ci_low": ci.low, "ci_high": ci.high,
                         **_gain_verdict(ci.mean, ci.low, ci.high, ci.n, baseline, lower)})
    return rows


def _gain_verdict(mean: float | None, low: float | None, high: float | None, n: int, baseline: str,
                  lower: bool) -> dict[str, Any]:
    """Whether an arm is worse than the baseline (negative transfer), and how surely: "significantly"
    only when the whole interval is on that side of 0."""
    if mean is None:
        return {"worse": False, "significant": False, "verdict": f"no seed shared with {baseline}"}
    if mean == 0:
        return {"worse": False, "significant": False, "verdict": f"same as {baseline}"}
    worse = (mean < 0) != lower
    significant = low is not None and high is not None and (high < 0 if mean < 0 else low > 0)
    side = "worse" if worse else "better"
    if significant:
        text = f"significantly {side} than {baseline}"
    elif n < 2:
        text = f"{side} than {baseline} (one seed: no interval)"
    else:
        text = f"{side} than {baseline} (the interval includes 0)"
    return {"worse": worse, "significant": significant,
            "verdict": text + (" — negative transfer" if worse else "")}


def _pair_rows(grid: _Grid, arms: list[str], budgets: list[Any], split: str, metric: str,
               lower: bool) -> list[dict[str, Any]]:
    rows = []
    for i, a in enumerate(arms):
        for b in arms[i + 1:]:
            for budget in budgets:
                va, vb = grid.values(a, budget, split, metric), grid.values(b, budget, split, metric)
                shared = [s for s in va if s in vb]
                test = compare_paired([va[s] for s in shared], [vb[s] for s in shared],
                                      higher_is_better=not lower)
                winner = a if test.outcome == "a" else b if test.outcome == "b" else None
                if winner:
                    verdict = f"{winner} better"
                elif test.outcome == "too few seeds to tell":
                    verdict = (f"too few seeds to tell (with {test.n_nonzero} non-zero differences the "
                               f"smallest reachable p is {test.min_p:.4f})")
                else:
                    verdict = test.outcome
                rows.append({"a": a, "b": b, "budget": budget, "label": str(budget), "seeds": shared,
                             "n": test.n, "n_nonzero": test.n_nonzero, "mean": test.mean,
                             "boot_low": test.boot_low, "boot_high": test.boot_high, "p": test.p,
                             "min_p": test.min_p, "outcome": test.outcome, "winner": winner,
                             "verdict": verdict})
    return rows


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Every number the report shows, from a checked results.json content (:func:`load_results`).
    Metric values stay fractions as the cells hold them (``scale`` says how they are shown); rows
    come in display order (arms, then budgets). The keys:

    - ``scores[split][metric]``: per arm and budget, ``n``, ``seeds``, ``values``, ``mean``, ``std``
      (ddof=1), ``ci_low``/``ci_high`` (Student t) and ``x`` (labels per class, "all" included);
    - ``gains``: per non-baseline arm and budget, the paired (arm − baseline) ``mean``, ``std``,
      ``ci_low``/``ci_high``, ``seeds``, ``worse`` (negative transfer), ``significant``, ``verdict``;
    - ``pairs``: per two non-baseline arms ``a``, ``b`` and budget, ``mean`` (a − b),
      ``boot_low``/``boot_high``, ``p`` (exact Wilcoxon), ``min_p``, ``outcome``, ``winner``, ``verdict``;
    - ``cost``: per arm and budget, ``n`` cells and the means of :data:`COST_FIELDS`;
    - ``cells``: ``expected``, ``present`` and the ``missing`` cell names; ``split`` (the headline
      split: test, or validation when the cells have no test scores, ``split_note`` says why).
    """
    comp, cells = results["comparison"], results["cells"]
    arms = [a["name"] for a in comp["arms"]]
    budgets, seeds, metric, baseline = comp["budgets"], comp["seeds"], comp["metric"], comp.get("baseline")
    metrics = list(dict.fromkeys([metric, *(m for m in comp.get("metrics", []) if isinstance(m, str))]))
    labels = [str(x) for x in comp.get("labels", [])]
    grid = _Grid(cells, len(labels))
    with_test = sum(isinstance(c.get("test"), dict) for c in cells)
    split = "test" if cells and with_test == len(cells) else "validation"
    split_note = None if split == "test" else "no cell has a test split" if with_test == 0 else (
        f"only {with_test} of {len(cells)} cells have a test split")
    lower = any(part in metric.lower() for part in LOWER_IS_BETTER)
    splits = ["validation", "test"] if split == "test" else ["validation"]
    scores = {which: {name: _score_rows(grid, arms, budgets, which, name) for name in metrics}
              for which in splits}
    # Metrics in [0, 1] (accuracy, F1...) are shown as percent, every other metric as it is.
    scale = {name: 100 if all(0 <= v <= 1 for which in splits for r in scores[which][name]
                              for v in r["values"]) else 1 for name in metrics}
    others = [a for a in arms if a != baseline]
    cost = [{"arm": arm, "budget": budget, "label": str(budget), "n": grid.count(arm, budget),
             **{field: grid.mean(arm, budget, field) for field in COST_FIELDS}}
            for arm in arms for budget in budgets]
    expected = [f"{arm}/{budget}/seed-{seed}" for arm in arms for budget in budgets for seed in seeds]
    present = {f"{c['arm']}/{c['budget']}/seed-{c['seed']}" for c in cells}
    all_x = [r["x"] for r in scores[split][metric] if r["budget"] == "all" and r["x"] is not None]
    return {
        "recipe": str(comp.get("recipe", "")), "task": str(comp.get("task", "")),
        "metric": metric, "metrics": metrics, "split": split, "split_note": split_note,
        "higher_is_better": not lower, "scale": scale,
        "arms": [{"name": a["name"], "strategy": str(a.get("strategy", "")),
                  "source": str(a.get("source", ""))} for a in comp["arms"]],
        "baseline": baseline, "budgets": budgets, "seeds": seeds,
        "all_per_class": max(all_x) if all_x else None, "labels": labels,
        "data": {k: v for k, v in (comp.get("data") or {}).items() if _number(v) is not None},
        "min_steps": comp.get("min_steps"), "backend": comp.get("backend"),
        "notes": [str(n) for n in comp.get("notes", [])],
        "cells": {"expected": len(expected), "present": len(present),
                  "missing": [name for name in expected if name not in present]},
        "scores": scores,
        "gains": _gain_rows(grid, arms, budgets, baseline, split, metric, lower) if baseline else [],
        "pairs": _pair_rows(grid, others, budgets, split, metric, lower),
        "cost": cost, "confidence": CONFIDENCE, "alpha": ALPHA,
    }


# --------------------------------------------------------------------------- the plots


def _svg(figure: Any, name: str) -> str:
    """A figure as reproducible SVG text whose ids are prefixed with the plot's name, so several
    plots inlined in one HTML page never share an id."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    # No metadata block: it names the matplotlib version (the bytes would change with it) and
    # holds links, which a self-contained page does without.
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", buffer.getvalue(), count=1, flags=re.DOTALL)
    text = re.sub(r'\bid="([^"]+)"', rf'id="{name}-\1"', text)
    text = text.replace("url(#", f"url(#{name}-").replace('href="#', f'href="#{name}-')
    return text


def _figure(size: tuple[float, float]) -> Any:
    from matplotlib.figure import Figure  # no pyplot: no global backend, no display

    return Figure(figsize=size, dpi=100, layout="constrained")


def _metric_axis(summary: dict[str, Any]) -> str:
    metric, scale = summary["metric"], summary["scale"][summary["metric"]]
    return f"{metric} on {summary['split']}" + (" (%)" if scale == 100 else "")


def draw_plots(summary: dict[str, Any]) -> dict[str, str]:
    """The report's plots as SVG text, by name (:data:`PLOT_NAMES`)."""
    import matplotlib

    # A fixed hash salt and no date: the same summary gives the same bytes. Text stays text
    # (no glyph definitions), which keeps the SVGs small and their ids few.
    with matplotlib.rc_context({"svg.hashsalt": "hftransfer-report", "svg.fonttype": "none"}):
        return {"data-efficiency": _svg(_draw_curve(summary), "data-efficiency"),
                "params": _svg(_draw_params(summary), "params"),
                "cost": _svg(_draw_cost(summary), "cost")}


def _x_positions(summary: dict[str, Any]) -> dict[Any, float]:
    """Where each budget sits on the x axis (an "all" with no known size goes one step past the rest)."""
    numeric = [b for b in summary["budgets"] if b != "all"]
    spot = {b: float(b) for b in numeric}
    if "all" in summary["budgets"]:
        spot["all"] = summary["all_per_class"] or 2.0 * max(numeric, default=1)
    return spot


def _draw_curve(summary: dict[str, Any]) -> Any:
    figure = _figure((7.5, 4.5))
    ax = figure.subplots()
    scale, spot = summary["scale"][summary["metric"]], _x_positions(summary)
    for i, arm in enumerate(a["name"] for a in summary["arms"]):
        rows = [r for r in summary["scores"][summary["split"]][summary["metric"]]
                if r["arm"] == arm and r["n"]]
        if not rows:
            continue
        xs = [r["x"] if r["x"] is not None else spot[r["budget"]] for r in rows]
        colour = COLOURS[i % len(COLOURS)]
        style = "--" if arm == summary["baseline"] else "-"
        ax.plot(xs, [r["mean"] * scale for r in rows], style, marker="o", color=colour, label=arm)
        band = [(x, r) for x, r in zip(xs, rows) if r["ci_low"] is not None]
        if band:
            ax.fill_between([x for x, _ in band], [r["ci_low"] * scale for _, r in band],
                            [r["ci_high"] * scale for _, r in band], color=colour, alpha=0.15, linewidth=0)
    ax.set_xscale("log", base=2)
    ticks = sorted(spot.items(), key=lambda item: item[1])
    known = summary["all_per_class"] is not None
    ax.set_xticks([x for _, x in ticks],
                  [(f"all ({x:.0f})" if known else "all") if b == "all" else str(b) for b, x in ticks])
    ax.minorticks_off()
    ax.set_xlabel("labels per class (log scale)")
    ax.set_ylabel(_metric_axis(summary))
    ax.set_title(f"Data efficiency: mean over seeds with its {summary['confidence']:.0%} interval",
                 fontsize=10)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no cells yet", transform=ax.transAxes, ha="center")
    return figure


def _draw_params(summary: dict[str, Any]) -> Any:
    figure = _figure((7.5, 4.5))
    ax = figure.subplots()
    scale = summary["scale"][summary["metric"]]
    cost = {(c["arm"], c["budget"]): c for c in summary["cost"]}
    drawn = False
    for i, arm in enumerate(a["name"] for a in summary["arms"]):
        for j, budget in enumerate(summary["budgets"]):
            row = next(r for r in summary["scores"][summary["split"]][summary["metric"]]
                       if r["arm"] == arm and r["budget"] == budget)
            params = cost[(arm, budget)]["trainable_params"]
            if not row["n"] or not params:
                continue
            err = None
            if row["ci_low"] is not None:
                err = [[(row["mean"] - row["ci_low"]) * scale], [(row["ci_high"] - row["mean"]) * scale]]
            ax.errorbar([params], [row["mean"] * scale], yerr=err, fmt=MARKERS[j % len(MARKERS)],
                        color=COLOURS[i % len(COLOURS)], capsize=3,
                        label=f"{arm}, {budget}" if budget == "all" else f"{arm}, {budget}/class")
            drawn = True
    if drawn:
        ax.set_xscale("log")
        ax.legend(fontsize=7, ncol=2)
    else:
        ax.text(0.5, 0.5, "no cells with a parameter count", transform=ax.transAxes, ha="center")
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel(_metric_axis(summary))
    ax.set_title("Score against trainable parameters (one point per arm and budget)", fontsize=10)
    ax.grid(alpha=0.3)
    return figure


def _draw_cost(summary: dict[str, Any]) -> Any:
    figure = _figure((7.5, 4.0))
    ax = figure.subplots()
    arms, budgets = [a["name"] for a in summary["arms"]], summary["budgets"]
    cost = {(c["arm"], c["budget"]): c for c in summary["cost"]}
    width = 0.8 / len(arms)
    for i, arm in enumerate(arms):
        walls = [cost[(arm, b)]["wall_s"] or 0.0 for b in budgets]
        ax.bar([k + (i - (len(arms) - 1) / 2) * width for k in range(len(budgets))], walls, width=width,
               color=COLOURS[i % len(COLOURS)], label=arm)
    ax.set_xticks(range(len(budgets)), [str(b) for b in budgets])
    ax.set_xlabel("labels per class")
    ax.set_ylabel("mean wall time per cell (s)")
    ax.set_title("Cost: wall time of one training run", fontsize=10)
    ax.margins(y=0.25)  # room above the bars for the legend
    ax.legend(fontsize=8, ncol=min(4, len(arms)), loc="upper center")
    ax.grid(alpha=0.3, axis="y")
    return figure


# --------------------------------------------------------------------------- the report


def _filters(summary: dict[str, Any]) -> dict[str, Any]:
    """The formats every number goes through (the same for the Markdown and the HTML)."""
    scale = summary["scale"][summary["metric"]]

    def metric(value: float | None) -> str:
        if value is None:
            return "–"
        return f"{value * 100:.1f}" if scale == 100 else f"{value:.4f}"

    def diff(value: float | None) -> str:
        if value is None:
            return "–"
        return f"{value * 100:+.1f}" if scale == 100 else f"{value:+.4f}"

    def pvalue(value: float | None) -> str:
        return "–" if value is None else "< 0.0001" if value < 0.0001 else f"{value:.4f}"

    def number(value: float | None, decimals: int = 1) -> str:
        return "–" if value is None else f"{value:,.{decimals}f}"

    def md(value: Any) -> str:
        # Text from results.json inside Markdown tables: no cell breaks, no raw HTML, no emphasis.
        text = " ".join(str(value).split())
        for char in "\\`*_[]|#":
            text = text.replace(char, "\\" + char)
        return text.replace("<", "&lt;").replace(">", "&gt;")

    return {"metric": metric, "diff": diff, "pvalue": pvalue, "number": number, "md": md}


def _template(name: str, html: bool, filters: dict[str, Any]) -> Any:
    """A report template (``hftransfer/templates/NAME``); autoescaped when it is HTML."""
    import jinja2

    env = jinja2.Environment(autoescape=html, keep_trailing_newline=True, trim_blocks=True,
                             lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters.update(filters)
    return env.from_string(resources.files("hftransfer").joinpath(f"templates/{name}").read_text("utf-8"))


def render(summary: dict[str, Any], svgs: dict[str, str]) -> tuple[str, str]:
    """The Markdown and the HTML of a summary (and its plots' SVG text, inlined in the HTML)."""
    import markupsafe

    pages = []
    for name, html in ((REPORT_MD, False), (REPORT_HTML, True)):
        template = _template(name, html, _filters(summary))
        inline = {k: markupsafe.Markup(v[v.index("<svg"):]) for k, v in svgs.items()} if html else {}
        pages.append(template.render(s=summary, plots={k: f"{PLOTS}/{k}.svg" for k in svgs}, svgs=inline))
    return pages[0], pages[1]


def ranking_rows(ranking: Any, summary: dict[str, Any]) -> dict[str, Any] | None:
    """``hftransfer rank``'s scores of the comparison's sources (``DIR/rank.json``) beside their
    fine-tuned validation means at the ranked budget, and Kendall's τ of each score's order
    against the fine-tuned one (None when rank.json is not what rank writes)."""
    from scipy import stats as scipy_stats

    try:
        candidates = [c for c in ranking["candidates"] if isinstance(c.get("name"), str)]
        budget = (ranking.get("fine_tuned") or {}).get("budget") or summary["budgets"][-1]
    except (TypeError, KeyError, AttributeError, IndexError):
        return None
    tuned = {r["arm"]: r["mean"] for r in summary["scores"]["validation"][summary["metric"]]
             if r["budget"] == budget and r["mean"] is not None}
    rows = [{"name": c["name"], "rank": i, **{k: _number(c.get(k)) for k in ("logme", "probe_accuracy", "leep")},
             "fine_tuned": tuned.get(c["name"])} for i, c in enumerate(candidates, 1)]
    common = [r for r in rows if r["fine_tuned"] is not None]
    order = sorted(common, key=lambda r: -r["fine_tuned"] if summary["higher_is_better"] else r["fine_tuned"])
    for place, row in enumerate(order, 1):
        row["fine_tuned_rank"] = place
    taus = {}
    for score in ("logme", "probe_accuracy", "leep"):
        pairs = [(r[score], r["fine_tuned"]) for r in common if r[score] is not None]
        if len(pairs) >= 2 and len(pairs) == len(common):
            tau = scipy_stats.kendalltau(*zip(*pairs)).statistic
            taus[score] = None if math.isnan(tau) else float(tau)
    return {"budget": budget, "label": str(budget), "rows": rows, "compared": len(common), "tau": taus}


def render_report(directory: str | Path) -> list[Path]:
    """Render ``DIR/report.md``, ``DIR/report.html`` and ``DIR/plots/*.svg`` from
    ``DIR/results.json`` alone (and ``DIR/rank.json``, when ``hftransfer rank --compare DIR``
    wrote one); returns the paths written (each written through a temporary file and a rename)."""
    directory = Path(directory)
    summary = summarize(load_results(directory))
    summary["ranking"] = None
    if (directory / "rank.json").is_file():
        summary["ranking"] = ranking_rows(rundir.read_json(directory / "rank.json"), summary)
    svgs = draw_plots(summary)
    markdown, html = render(summary, svgs)
    plots = directory / PLOTS
    try:
        plots.mkdir(exist_ok=True)
    except OSError as exc:
        raise HFTransferError(f"cannot make {str(plots)!r} for the report's plots ({exc.strerror}); "
                              "move what is there away or make the directory writable") from None
    written = []
    for path, text in [*((plots / f"{k}.svg", v) for k, v in svgs.items()),
                       (directory / REPORT_MD, markdown), (directory / REPORT_HTML, html)]:
        try:
            rundir.write_text(path, text)
        except OSError as exc:
            raise HFTransferError(f"cannot write {str(path)!r} ({exc.strerror}); make the directory "
                                  "writable and run `hftransfer report` again") from None
        written.append(path)
    return written
