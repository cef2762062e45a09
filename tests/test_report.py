"""The report of ``hftransfer compare``, rendered from synthetic results.json files (no training):
its numbers are the cells' numbers, negative transfer is flagged, a verdict needs enough seeds,
the HTML fetches nothing, and the same file renders the same bytes."""
from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import user_error
from scipy import stats as scipy_stats

from hftransfer.comparison import stats
from hftransfer.comparison.report import PLOT_NAMES, load_results, render_report, summarize

BUDGETS = [16, 64, "all"]
LEVEL = {16: 0.60, 64: 0.70, "all": 0.80}
# Mean gain of each arm over scratch (feature-extraction transfers negatively).
GAIN = {"full": 0.05, "lora": 0.02, "feature-extraction": -0.04, "scratch": 0.0}
N_TRAIN = {16: 32, 64: 128, "all": 6920}
PARAMS = {"full": 22_713_218, "lora": 300_000, "feature-extraction": 1_538, "scratch": 22_713_218}


def noise(arm: str, budget, seed: int) -> float:
    """Spread that differs per arm, budget and seed (so every std is non-zero), within ±0.01."""
    return ((sorted(GAIN).index(arm) * 7 + BUDGETS.index(budget) * 3 + seed * 5) % 11 - 5) / 500


def make_results(seeds=(0, 1, 2), *, test: bool = True, baseline: str | None = "scratch",
                 arms=("full", "lora", "feature-extraction", "scratch")) -> dict:
    cells = []
    for arm, budget, seed in itertools.product(arms, BUDGETS, seeds):
        acc = round(LEVEL[budget] + GAIN[arm] + noise(arm, budget, seed), 4)
        cell = {"cell": f"{arm}/{budget}/seed-{seed}", "arm": arm, "strategy": arm, "source": "embedded",
                "budget": budget, "seed": seed, "n_train": N_TRAIN[budget], "epochs": 5, "steps": 50,
                "validation": {"accuracy": round(acc + 0.01, 4), "f1": round(acc - 0.005, 4)},
                "trainable_params": PARAMS[arm], "total_params": PARAMS["full"],
                "wall_s": 40.0 + seed + (10 if arm == "full" else 0), "peak_rss_mb": 1450.3,
                "samples_per_second": 30.1, "run_dir": f"cells/{arm}/{budget}/seed-{seed}"}
        if test:
            cell["test"] = {"accuracy": acc, "f1": round(acc - 0.01, 4)}
        cells.append(cell)
    return {"comparison": {
        "recipe": "sst2-compare", "task": "text-classification", "metric": "accuracy",
        "metrics": ["accuracy", "f1"],
        "arms": [{"name": a, "strategy": a, "source": "embedded"} for a in arms],
        "baseline": baseline if baseline in arms else None, "budgets": BUDGETS, "seeds": list(seeds),
        "labels": ["negative", "positive"], "data": {"train": 6920, "validation": 872, "test": 1821},
        "min_steps": 50, "backend": "local", "notes": ["budgets drawn with the data seed"]},
        "cells": cells}


def write(directory: Path, results: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.json").write_text(json.dumps(results), encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[Path, dict, list[Path]]:
    """The 3-seed comparison, rendered once for the tests that only read it."""
    directory = write(tmp_path_factory.mktemp("report") / "cmp", make_results())
    return directory, summarize(load_results(directory)), render_report(directory)


def row(rows: list[dict], **match) -> dict:
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, found)
    return found[0]


def md_row(markdown: str, section: str, *cells: str) -> str:
    """The one Markdown table row of section ``## SECTION...`` that starts with these cells."""
    text = markdown.split(f"\n## {section}", 1)[1].split("\n## ", 1)[0]
    head = "| " + " | ".join(cells) + " |"
    found = [line for line in text.splitlines() if line.startswith(head)]
    assert len(found) == 1, (head, found)
    return found[0]


def test_the_report_files_are_written(rendered):
    directory, _, written = rendered
    expected = [directory / "plots" / f"{name}.svg" for name in PLOT_NAMES]
    expected += [directory / "report.md", directory / "report.html"]
    assert written == expected and all(p.is_file() and p.stat().st_size for p in expected)
    assert not [p for p in directory.rglob("*") if ".tmp" in p.name]  # written through a rename


def test_means_stds_and_intervals_are_the_cells_numbers(rendered):
    directory, summary, _ = rendered
    markdown = (directory / "report.md").read_text(encoding="utf-8")
    results = load_results(directory)
    for split, arm, budget in itertools.product(("test", "validation"), GAIN, BUDGETS):
        values = np.array([c[split]["accuracy"] for c in results["cells"]
                           if c["arm"] == arm and c["budget"] == budget])
        mean, std = values.mean(), values.std(ddof=1)
        half = scipy_stats.t.ppf(0.975, len(values) - 1) * std / np.sqrt(len(values))
        r = row(summary["scores"][split]["accuracy"], arm=arm, budget=budget)
        assert r["n"] == 3 and r["seeds"] == [0, 1, 2]
        assert r["mean"] == pytest.approx(mean, abs=1e-12) and r["std"] == pytest.approx(std, abs=1e-12)
        assert (r["ci_low"], r["ci_high"]) == pytest.approx((mean - half, mean + half), abs=1e-12)
        if split == "test":  # the first table of the Markdown is the test split's
            line = md_row(markdown, "accuracy on test", arm, str(budget), "3")
            assert f"{100 * mean:.1f} ± {100 * std:.1f}" in line
            assert f"[{100 * (mean - half):.1f}, {100 * (mean + half):.1f}]" in line
    assert summary["split"] == "test" and summary["scale"]["accuracy"] == 100
    assert "36 of 36 cells are in" in markdown
    assert "model selection" in markdown.lower() and "read once per cell" in markdown


def test_all_sits_at_the_labels_per_class_it_had(rendered):
    _, summary, _ = rendered
    r = row(summary["scores"]["test"]["accuracy"], arm="lora", budget="all")
    assert r["x"] == 6920 / 2 and summary["all_per_class"] == 3460
    assert row(summary["scores"]["test"]["accuracy"], arm="lora", budget=64)["x"] == 64
    svg = (rendered[0] / "plots" / "data-efficiency.svg").read_text(encoding="utf-8")
    assert "all (3460)" in svg


def test_all_without_sizes_is_plotted_last_and_unlabelled(tmp_path):
    results = make_results()
    for cell in results["cells"]:
        del cell["n_train"]
    directory = write(tmp_path / "cmp", results)
    render_report(directory)
    assert summarize(load_results(directory))["all_per_class"] is None
    svg = (directory / "plots" / "data-efficiency.svg").read_text(encoding="utf-8")
    assert ">all<" in svg and "all (" not in svg


def test_gains_are_paired_by_seed_and_negative_transfer_is_flagged(rendered):
    directory, summary, _ = rendered
    markdown = (directory / "report.md").read_text(encoding="utf-8")
    results = load_results(directory)

    def scores(arm, budget):
        return {c["seed"]: c["test"]["accuracy"] for c in results["cells"]
                if c["arm"] == arm and c["budget"] == budget}

    for arm, budget in itertools.product(("full", "lora", "feature-extraction"), BUDGETS):
        mine, base = scores(arm, budget), scores("scratch", budget)
        diffs = np.array([mine[s] - base[s] for s in sorted(base)])
        g = row(summary["gains"], arm=arm, budget=budget)
        assert g["n"] == 3 and g["mean"] == pytest.approx(diffs.mean(), abs=1e-9)
        half = scipy_stats.t.ppf(0.975, 2) * diffs.std(ddof=1) / np.sqrt(3)
        assert (g["ci_low"], g["ci_high"]) == pytest.approx((diffs.mean() - half, diffs.mean() + half),
                                                            abs=1e-9)
        line = md_row(markdown, "Gain", arm, str(budget), "3", f"{100 * diffs.mean():+.1f}")
        if arm == "feature-extraction":
            assert g["worse"] and "worse than scratch" in line and "negative transfer" in line
            assert g["significant"] == (g["ci_high"] < 0)
            assert ("significantly" in line) == g["significant"]
        else:
            assert not g["worse"] and "worse" not in line and "negative" not in line
    assert any(g["significant"] for g in summary["gains"] if g["arm"] == "feature-extraction")
    assert not any(g["significant"] and g["ci_high"] >= 0 for g in summary["gains"] if g["worse"])


def test_three_seeds_are_too_few_to_tell(rendered):
    directory, summary, _ = rendered
    markdown = (directory / "report.md").read_text(encoding="utf-8")
    assert {p["outcome"] for p in summary["pairs"]} == {"too few seeds to tell"}
    assert len(summary["pairs"]) == 3 * len(BUDGETS)  # every two of full, lora, feature-extraction
    assert {p["min_p"] for p in summary["pairs"]} == {0.25}
    line = md_row(markdown, "Paired", "full", "lora", "16", "3")
    assert "too few seeds to tell" in line and "smallest reachable p is 0.2500" in line


def test_six_seeds_give_a_verdict(tmp_path):
    results = make_results(seeds=range(6))
    # full beats lora by a different amount on every seed; lora and feature-extraction at 16
    # labels: half the seeds each way (no clear difference).
    for i, cell in enumerate(results["cells"]):
        if cell["arm"] == "lora":
            cell["test"]["accuracy"] = round(0.5 + 0.01 * cell["seed"], 4)
        if cell["arm"] == "full":
            cell["test"]["accuracy"] = round(0.5 + 0.01 * cell["seed"] + 0.002 * (cell["seed"] + 1), 4)
        if cell["arm"] == "feature-extraction" and cell["budget"] == 16:
            cell["test"]["accuracy"] = round(0.5 + 0.01 * cell["seed"] + (-1) ** cell["seed"] * 0.003, 4)
    directory = write(tmp_path / "cmp", results)
    render_report(directory)
    summary = summarize(load_results(directory))
    markdown = (directory / "report.md").read_text(encoding="utf-8")
    pair = row(summary["pairs"], a="full", b="lora", budget=64)
    assert pair["n"] == 6 and pair["min_p"] == pytest.approx(2 / 64)
    diffs = [0.002 * (s + 1) for s in range(6)]
    assert pair["p"] == pytest.approx(scipy_stats.wilcoxon(diffs, method="exact").pvalue)
    assert pair["p"] < 0.05 and pair["outcome"] == "a" and pair["winner"] == "full"
    assert pair["mean"] == pytest.approx(np.mean(diffs), abs=1e-9)
    assert pair["boot_low"] <= pair["mean"] <= pair["boot_high"]
    assert min(diffs) - 1e-9 <= pair["boot_low"] and pair["boot_high"] <= max(diffs) + 1e-9
    assert "full better" in md_row(markdown, "Paired", "full", "lora", "64", "6")
    mixed = row(summary["pairs"], a="lora", b="feature-extraction", budget=16)
    assert mixed["outcome"] == "no clear difference" and mixed["p"] > 0.05
    assert "no clear difference" in md_row(markdown, "Paired", "lora", "feature-extraction", "16", "6")
    assert "too few seeds" not in markdown


def test_the_paired_test_handles_zeros_ties_and_identical_arms():
    assert stats.compare_paired([0.5, 0.6, 0.7], [0.5, 0.6, 0.7]).outcome == "identical"
    # 0.8 - 0.7 and 0.9 - 0.8 are one tie, 0.8 - 0.8 is a zero (not floating-point noise).
    d = stats.differences([0.8, 0.9, 0.8, 0.75], [0.7, 0.8, 0.8, 0.7])
    assert list(d) == [0.1, 0.1, 0.0, 0.05]
    # With ties the exact p is the sign-flip distribution of the tied ranks.
    diffs = [0.01, 0.02, 0.02, -0.04, 0.05, 0.06, 0.02]
    ranks = scipy_stats.rankdata(np.abs(diffs))
    observed = ranks[np.array(diffs) > 0].sum()
    total = ranks.sum()
    flips = [ranks[np.array(s, dtype=bool)].sum() for s in itertools.product([0, 1], repeat=len(diffs))]
    exact = np.mean([min(t, total - t) <= min(observed, total - observed) + 1e-9 for t in flips])
    assert stats.wilcoxon_p(diffs) == pytest.approx(exact)
    # Zeros are dropped: six seeds with one zero are five differences, too few to tell.
    five = stats.compare_paired([0.6, 0.61, 0.62, 0.63, 0.64, 0.5], [0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    assert five.n == 6 and five.n_nonzero == 5 and five.outcome == "too few seeds to tell"
    assert five.min_p == 0.0625
    lower = stats.compare_paired([0.1 * i for i in range(1, 7)], [0.0] * 6, higher_is_better=False)
    assert lower.outcome == "b"  # a loss: the smaller one is better
    assert stats.mean_ci([0.7]) == stats.MeanCI(1, 0.7, None, None, None)
    assert stats.bootstrap_ci([0.1, 0.2, 0.4]) == stats.bootstrap_ci([0.4, 0.1, 0.2])


def test_one_seed_says_the_interval_cannot_be_computed(tmp_path):
    directory = write(tmp_path / "cmp", make_results(seeds=(3,)))
    render_report(directory)
    markdown = (directory / "report.md").read_text(encoding="utf-8")
    line = md_row(markdown, "accuracy on test", "full", "16", "1")
    assert "one seed: the interval cannot be computed" in line
    assert "too few seeds to tell" in markdown and "smallest reachable p is 1.0000" in markdown


def test_the_html_is_self_contained_and_shows_the_same_numbers(rendered):
    directory = rendered[0]
    html = (directory / "report.html").read_text(encoding="utf-8")
    markdown = (directory / "report.md").read_text(encoding="utf-8")
    assert html.count("<svg") == len(PLOT_NAMES) == 3
    assert not re.search(r"<(img|script|link|iframe|object|embed)\b", html, re.IGNORECASE)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", html, re.IGNORECASE) and "@import" not in html
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids))  # the inlined plots share no id
    for name in PLOT_NAMES:
        assert f"](plots/{name}.svg)" in markdown
    numbers = lambda text: set(re.findall(r"[+-]?\d[\d,]*\.\d+", text.split("## Data efficiency")[0]))
    tables_md = numbers(markdown) | set(re.findall(r"[+-]?\d[\d,]*\.\d+", markdown.split("## Gain")[1]))
    assert tables_md and all(n in html for n in tables_md)


def test_text_from_results_json_is_escaped(tmp_path):
    results = make_results(arms=("full", "scratch"))
    for cell in results["cells"]:
        if cell["arm"] == "full":
            cell["arm"] = "<script>alert(1)</script>|x"
    results["comparison"]["arms"][0]["name"] = "<script>alert(1)</script>|x"
    results["comparison"]["notes"] = ["a | note with <b>html</b>"]
    directory = write(tmp_path / "cmp", results)
    render_report(directory)
    html = (directory / "report.html").read_text(encoding="utf-8")
    markdown = (directory / "report.md").read_text(encoding="utf-8")
    assert "<script" not in html and "&lt;script&gt;" in html
    assert "<script" not in markdown and "<b>" not in markdown and "a \\| note" in markdown
    assert "There is only one arm besides the baseline" in markdown


def test_rendering_twice_gives_the_same_bytes(tmp_path, rendered):
    first = {p.relative_to(rendered[0]): p.read_bytes() for p in rendered[2]}
    again = write(tmp_path / "elsewhere", load_results(rendered[0]))
    second = {p.relative_to(again): p.read_bytes() for p in render_report(again)}
    assert first == second
    assert {p.relative_to(again): p.read_bytes() for p in render_report(again)} == second


def test_a_partial_grid_renders_and_says_how_many_cells_are_in(tmp_path):
    results = make_results()
    dropped = {"lora/64/seed-1", "scratch/16/seed-2"}
    results["cells"] = [c for c in results["cells"] if c["cell"] not in dropped]
    results["cells"] = [c for c in results["cells"]
                        if not (c["arm"] == "feature-extraction" and c["budget"] == "all")]
    directory = write(tmp_path / "cmp", results)
    render_report(directory)
    summary = summarize(load_results(directory))
    markdown = (directory / "report.md").read_text(encoding="utf-8")
    assert summary["cells"]["present"] == 31 and summary["cells"]["expected"] == 36
    assert "31 of 36 cells are in" in markdown and "lora/64/seed-1" in markdown
    lora = row(summary["scores"]["test"]["accuracy"], arm="lora", budget=64)
    values = [c["test"]["accuracy"] for c in results["cells"] if c["arm"] == "lora" and c["budget"] == 64]
    assert lora["n"] == 2 and lora["mean"] == pytest.approx(np.mean(values))
    assert row(summary["gains"], arm="full", budget=16)["seeds"] == [0, 1]  # scratch seed 2 is missing
    assert "not run" in md_row(markdown, "accuracy on test", "feature-extraction", "all", "0")


def test_without_a_test_split_the_report_uses_validation_and_says_so(tmp_path):
    directory = write(tmp_path / "cmp", make_results(test=False))
    render_report(directory)
    summary = summarize(load_results(directory))
    markdown = (directory / "report.md").read_text(encoding="utf-8")
    html = (directory / "report.html").read_text(encoding="utf-8")
    assert summary["split"] == "validation" and "test" not in summary["scores"]
    assert "No test split" in markdown and "on the validation split" in markdown and "No test split" in html
    assert "## accuracy on test" not in markdown and "## accuracy on validation" in markdown
    values = [c["validation"]["accuracy"] for c in load_results(directory)["cells"]
              if c["arm"] == "full" and c["budget"] == 16]
    line = md_row(markdown, "accuracy on validation", "full", "16", "3")
    assert f"{100 * np.mean(values):.1f} ± {100 * np.std(values, ddof=1):.1f}" in line


def test_without_a_baseline_there_is_no_gain(tmp_path):
    directory = write(tmp_path / "cmp", make_results(baseline=None, arms=("full", "lora")))
    render_report(directory)
    markdown = (directory / "report.md").read_text(encoding="utf-8")
    assert summarize(load_results(directory))["gains"] == []
    assert "no scratch baseline (--no-scratch)" in markdown and "no gain is computed" in markdown


def test_a_missing_or_broken_results_file_is_one_clear_error(tmp_path):
    user_error("results.json", "not found", "hftransfer compare", call=render_report,
               directory=tmp_path / "nothing")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "results.json").write_text('{"comparison": {', encoding="utf-8")
    user_error("results.json", "not readable JSON", "hftransfer compare", call=render_report,
               directory=broken)
    for mangle, needle in [(lambda r: r.pop("cells"), "'cells'"),
                           (lambda r: r["comparison"].update(metric=3), "comparison.metric"),
                           (lambda r: r["comparison"].update(budgets=[16, 0]), "comparison.budgets"),
                           (lambda r: r["comparison"].update(baseline="nope"), "baseline 'nope'"),
                           (lambda r: r["cells"][4].update(arm="ghost"), "cells[4]"),
                           (lambda r: r["cells"][5].pop("validation"), "cells[5] has no 'validation'"),
                           (lambda r: r["cells"][6].update(test=[0.5]), "cells[6].test"),
                           (lambda r: r["cells"].append(dict(r["cells"][0])), "repeats")]:
        results = make_results()
        mangle(results)
        directory = write(tmp_path / f"bad{len(needle)}", results)
        user_error(str(directory / "results.json"), needle, "hftransfer compare", call=render_report,
                   directory=directory)
        assert not (directory / "report.md").exists()
