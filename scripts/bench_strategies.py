"""The SST-2 strategy table: run the shipped sst2-*.yaml recipes and tabulate what each bought.

Each recipe runs as its own `hftransfer train` process (whole-process wall time). Results are
kept in runs/bench-strategies/results.json, so recipes can be run one at a time; the table in
BENCHMARKS.md is re-rendered from all results so far.

    python scripts/bench_strategies.py                       # all sst2-*.yaml recipes
    python scripts/bench_strategies.py --recipes sst2-full,sst2-lora
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "runs" / "bench-strategies"
sys.path.insert(0, str(Path(__file__).parent))
from _bench import update_section  # noqa: E402

ORDER = ["sst2-full", "sst2-lora", "sst2-feature-extraction", "sst2-partial-freeze", "sst2-full-l2sp",
         "sst2-scratch"]


def run(name: str) -> dict:
    run_dir = OUT / name
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "hftransfer", "train", f"recipes/{name}.yaml",
                           "train.disable_tqdm=true", "--output-dir", str(run_dir), "--overwrite"],
                          cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"wall_s": wall, "metrics": metrics}


def render(results: dict) -> str:
    rows = ["| recipe | strategy | validation acc | test acc | trainable params | wall (whole process) "
            "| train samples/s | peak RSS MB | ‖θ − θ₀‖ |", "|---|---|---|---|---|---|---|---|---|"]
    for name in [n for n in ORDER if n in results] + sorted(set(results) - set(ORDER)):
        r = results[name]
        m = r["metrics"]
        p = m["params"]
        distance = m.get("transfer", {}).get("distance_from_source")
        rows.append(
            f"| `{name}` | {m['strategy']} | {m['validation']['accuracy']:.4f} | {m['test']['accuracy']:.4f} "
            f"| {p['trainable']:,} ({100 * p['trainable'] / p['total']:.2f} %) | {r['wall_s'] / 60:.1f} min "
            f"| {m['train']['samples_per_second']:.1f} | {m['train']['peak_rss_mb']:.0f} "
            f"| {'—' if distance is None else f'{distance:.2f}'} |")
    return "\n".join(rows) + (
        "\n\nSST-2 train 6,920 / validation 872 / test 1,821 sentences from `../shared/data/sst2`, the "
        "embedded MiniLM (22.7 M parameters), each recipe as shipped. ‖θ − θ₀‖ is the L2 distance the "
        "transferred weights moved from the source weights (— where they cannot move or there are none). "
        "Model selection and all tuning used validation only; test was read once per run.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default=",".join(ORDER))
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    store = OUT / "results.json"
    results = json.loads(store.read_text()) if store.exists() else {}
    for name in [n.strip() for n in args.recipes.split(",") if n.strip()]:
        results[name] = run(name)
        store.write_text(json.dumps(results, indent=2))
        m = results[name]["metrics"]
        print(f"{name}: validation {m['validation']['accuracy']:.4f}, "
              f"{results[name]['wall_s'] / 60:.1f} min", flush=True)
    update_section("SST-2 strategy table", "python scripts/bench_strategies.py", render(results))


if __name__ == "__main__":
    main()
