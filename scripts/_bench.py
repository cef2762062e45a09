"""Helpers shared by the benchmark scripts: write one section of BENCHMARKS.md in place; the
throughput bench's SST-2 subset and kit run (bench_throughput, bench_profile, bench_speed_options)."""
from __future__ import annotations

import csv
import datetime
import re
import statistics
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"


def sst2_train_subset(folder: Path, n: int) -> Path:
    """``folder/train.csv``: the first ``n`` sentences of SST-2 train (the file is in random
    order), as whole CSV records."""
    subset = folder / "train.csv"
    with (SST2 / "train.csv").open(encoding="utf-8", newline="") as src, subset.open("w", encoding="utf-8", newline="") as dst:
        reader, writer = csv.reader(src), csv.writer(dst)
        writer.writerow(next(reader))
        for i, row in enumerate(reader):
            if i >= n:
                break
            writer.writerow(row)
    return subset


def throughput_run(subset: Path, *changes: str) -> list[str]:
    """The arguments after ``python`` of the throughput bench's kit run (add ``--output-dir``):
    sst2-full on ``subset``, batch 32, lr 5e-5, one epoch, no checkpoints, validation at the end,
    no test; ``changes`` are further overrides (a later one wins)."""
    return ["-m", "hftransfer", "train", "recipes/sst2-full.yaml", f"data.train={subset}", "data.test=null",
            "train.num_train_epochs=1", "train.learning_rate=5e-5", "train.per_device_train_batch_size=32",
            "train.save_strategy=no", "train.eval_strategy=no", "train.load_best_model_at_end=false",
            "train.disable_tqdm=true", *changes]


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
