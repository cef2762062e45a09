"""The SST-2 comparison: `hftransfer compare` with full, lora and feature-extraction (+ scratch)
× 3 seeds × 16, 64, 256 labels per class, killed half-way and run again, then checked.

1. `hftransfer compare recipes/sst2-compare.yaml ...` in its own process, killed (SIGKILL) once
   half of the cells are finished; the same command again finishes the rest. The wall time is
   both runs together.
2. Determinism: two cells are deleted (one finished before the kill, one after) and the command
   runs a third time; it must train exactly those two and give the same results.json metrics.
3. The section "SST-2 comparison" of BENCHMARKS.md: the report's test-accuracy table, its gain
   over scratch, and the data-efficiency plot (docs/compare-sst2-data-efficiency.svg).

    python scripts/bench_compare.py
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "runs" / "bench-compare" / "sst2"
sys.path.insert(0, str(Path(__file__).parent))
from _bench import update_section  # noqa: E402

COMMAND = ["compare", "recipes/sst2-compare.yaml", "--strategies", "full,lora,feature-extraction",
           "--label-budgets", "16,64,256", "--seeds", "3"]
CELLS = 36


def launch() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hftransfer", *COMMAND, "--output-dir", str(OUT)], cwd=REPO,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finished_cells() -> int:
    try:
        return len(json.loads((OUT / "results.json").read_text())["cells"])
    except (OSError, ValueError, KeyError):
        return 0


def scores(results: dict) -> dict:
    return {r["cell"]: (r["validation"], r["test"], r["n_train"], r["steps"]) for r in results["cells"]}


def trained_now(output: str) -> int:
    line = next(line for line in output.splitlines() if line.startswith("comparison in "))
    return int(line.split("(")[1].split()[0])


def main() -> None:
    if "--determinism-only" in sys.argv:  # the kill-and-rerun phase ran; check.json holds its numbers
        check = json.loads((OUT.parent / "check.json").read_text())
        results = json.loads((OUT / "results.json").read_text())
        determinism(results, check, results["cells"][0]["cell"])
        return
    if OUT.exists():
        shutil.rmtree(OUT)
    start = time.perf_counter()
    first = launch()
    while first.poll() is None and finished_cells() < CELLS // 2:
        time.sleep(2)
    at_kill = finished_cells()
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    killed_at = time.perf_counter() - start
    partial = json.loads((OUT / "results.json").read_text())
    second = launch()
    output, _ = second.communicate()
    if second.returncode != 0:
        sys.exit(f"the rerun failed:\n{output[-3000:]}")
    wall = time.perf_counter() - start
    retrained = trained_now(output)
    results = json.loads((OUT / "results.json").read_text())
    kept_same = all(scores(results)[c] == s for c, s in scores(partial).items())
    check = {"killed after (s)": round(killed_at), "cells finished at the kill": at_kill,
             "cells the rerun trained": retrained, "wall, both runs (min)": round(wall / 60, 1),
             "kept cells unchanged": kept_same}
    (OUT.parent / "check.json").write_text(json.dumps(check, indent=2))
    determinism(results, check, partial["cells"][0]["cell"])


def determinism(results: dict, check: dict, before: str) -> None:
    """Delete a cell finished before the kill and one after; a rerun must train just them and
    give the same results."""
    after = results["cells"][-1]["cell"]
    for cell in (before, after):
        shutil.rmtree(OUT / cell)
    third = launch()
    output3, _ = third.communicate()
    if third.returncode != 0:
        sys.exit(f"the determinism rerun failed:\n{output3[-3000:]}")
    again = json.loads((OUT / "results.json").read_text())
    check["cells retrained in the determinism check"] = trained_now(output3)
    check["results identical after retraining 2 cells"] = scores(again) == scores(results)
    print(json.dumps(check, indent=2))
    (OUT.parent / "check.json").write_text(json.dumps(check, indent=2))
    render(again, check)


def render(results: dict, check: dict) -> None:
    sys.path.insert(0, str(REPO))
    from hftransfer.comparison.report import summarize

    summary = summarize(results)
    docs = REPO / "docs"
    docs.mkdir(exist_ok=True)
    shutil.copy(OUT / "plots" / "data-efficiency.svg", docs / "compare-sst2-data-efficiency.svg")
    lines = ["| arm | 16 per class | 64 per class | 256 per class |", "|---|---|---|---|"]
    rows = summary["scores"]["test"]["accuracy"]
    for arm in [a["name"] for a in results["comparison"]["arms"]]:
        cells = {r["budget"]: r for r in rows if r["arm"] == arm}
        lines.append(f"| {arm} | " + " | ".join(
            f"{100 * cells[b]['mean']:.1f} ± {100 * cells[b]['std']:.1f}" for b in (16, 64, 256)) + " |")
    gains = ["| arm | 16 per class | 64 per class | 256 per class |", "|---|---|---|---|"]
    for arm in [a["name"] for a in results["comparison"]["arms"] if a["name"] != "scratch"]:
        cells = {r["budget"]: r for r in summary["gains"] if r["arm"] == arm}
        gains.append(f"| {arm} | " + " | ".join(
            f"{100 * cells[b]['mean']:+.1f} [{100 * cells[b]['ci_low']:+.1f}, {100 * cells[b]['ci_high']:+.1f}]"
            for b in (16, 64, 256)) + " |")
    cost = {}
    for row in results["cells"]:
        cost.setdefault(row["arm"], []).append(row["wall_s"])
    body = (
        "SST-2 test accuracy (%), mean ± std over seeds 0, 1, 2 (the report's own numbers, "
        "`runs/bench-compare/sst2/report.md`):\n\n" + "\n".join(lines)
        + "\n\nGain over scratch in points, mean and 95 % interval over the 3 paired seeds:\n\n" + "\n".join(gains)
        + "\n\n![SST-2 data efficiency](docs/compare-sst2-data-efficiency.svg)\n\n"
        + "Mean wall time of one cell (s): " + ", ".join(f"{a} {sum(v) / len(v):.0f}" for a, v in cost.items())
        + f".\n\nThe run was killed (SIGKILL) after {check['killed after (s)']} s with "
        f"{check['cells finished at the kill']} of 36 cells finished; the same command then trained "
        f"{check['cells the rerun trained']} cells. Both runs together: **{check['wall, both runs (min)']} min** "
        f"wall on the 2-core box. Cells finished before the kill kept their results "
        f"({'yes' if check['kept cells unchanged'] else 'NO'}); deleting two cells and running again retrained "
        f"{check['cells retrained in the determinism check']} and gave "
        f"{'the same' if check['results identical after retraining 2 cells'] else 'DIFFERENT'} results. "
        "Every cell: the embedded MiniLM, the same labelled sample for every arm at a budget and seed, "
        "validation (872) for model selection, test (1,821) read once; at least 50 optimizer steps.")
    update_section("SST-2 comparison (hftransfer compare)", "python scripts/bench_compare.py", body)


if __name__ == "__main__":
    main()
