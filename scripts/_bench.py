"""Helpers shared by the benchmark scripts: write one section of BENCHMARKS.md in place."""
from __future__ import annotations

import datetime
import re
import statistics
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def update_section(title: str, command: str, body: str) -> None:
    """Replace (or append) the section ``## title`` with the command that produced it and body."""
    text = BENCHMARKS.read_text(encoding="utf-8") if BENCHMARKS.exists() else (
        "# Benchmarks\n\nEvery table below was written by the script named in its command; rerun it "
        "to reproduce. Machine: the project's 2-core CPU box unless a section says otherwise.\n")
    stamp = datetime.date.today().isoformat()
    section = f"## {title}\n\nCommand (run from the repository root, {stamp}):\n\n```\n{command}\n```\n\n{body}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    BENCHMARKS.write_text(text, encoding="utf-8")


def mean_std(values: list[float]) -> str:
    """Accuracies (fractions) as percentage points: mean ± standard deviation over seeds."""
    if not values:
        return "–"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * std:.1f}"
