"""A small comparison's report.html as a person sees it, in headless Chromium: every plot drawn,
no console error, no request leaving the page, and the numbers of results.json on the page.

Needs Debian's `chromium` (.ci/run installs it): skipped without it locally, a failure on CI.
"""
from __future__ import annotations

import json
import os

import pytest
from browser import Browser, find_chromium
from helpers import tiny_recipe_dict

from hftransfer.comparison import compare
from hftransfer.comparison.report import PLOT_NAMES, summarize


@pytest.fixture(scope="module")
def chromium():
    if find_chromium() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed: CI must render the report, not skip it")
        pytest.skip("chromium is not installed (.ci/run installs it)")
    with Browser(timeout=60) as browser:
        yield browser


def test_a_comparison_report_renders_whole_and_shows_the_results(chromium, tiny_model_dir, toy_data, tmp_path):
    recipe = tiny_recipe_dict(tiny_model_dir, toy_data, "full", train={"learning_rate": 5e-3})
    result = compare(recipe, strategies="full,feature-extraction", budgets="4,8", seeds=2, min_steps=20,
                     output_dir=tmp_path / "cmp", progress=False)
    page = result.directory / "report.html"
    check = chromium.render(page, tmp_path / "report.png")
    assert check.problems() == [], check.problems()
    assert len(check.svgs) == len(PLOT_NAMES)
    for figure in check.svgs:  # each plot drawn, at a readable size, with ink on screen
        assert figure.width > 200 and figure.height > 150 and figure.ink > 0.01
    assert check.page_errors == [] and check.console == [] and check.outside_requests == []

    # Every mean in the report's tables is the mean of results.json's cells, as shown on screen.
    results = json.loads((result.directory / "results.json").read_text())
    summary = summarize(results)
    text = " ".join(check.text.split())
    for row in summary["scores"]["test"]["accuracy"]:
        values = [c["test"]["accuracy"] for c in results["cells"]
                  if c["arm"] == row["arm"] and c["budget"] == row["budget"]]
        assert row["mean"] == pytest.approx(sum(values) / len(values))
        assert f"{100 * row['mean']:.1f}" in text
    for heading in ("Gain over scratch", "Paired comparisons", "Data efficiency", "Cost"):
        assert heading in text
    assert len({f"{100 * r['mean']:.1f}" for r in summary["scores"]["test"]["accuracy"]}) > 1  # it learned
