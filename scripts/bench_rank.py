"""Does `hftransfer rank` pick the source that fine-tunes best? SST-2 and CR, over a candidate set
that exists offline, against `hftransfer compare` of the same candidates.

1. Two fine-tuned sources (if missing): MiniLM fine-tuned on CoNLL-2003 (recipes/conll2003-full.yaml,
   1 epoch on 4,000 sentences) and on SST-2 (recipes/sst2-full.yaml, 1 epoch on 3,000 sentences).
2. Candidates: recipes/sources/minilm-family.yaml (MiniLM, its 3-layer and 1-layer truncations,
   a random twin) + the CoNLL run; for CR also the SST-2 run.
3. Per target: `hftransfer compare recipes/T-rank.yaml --sources C --strategies full
   --label-budgets 256 --seeds 3 --no-scratch` (the fine-tuned order; a rerun finds its cells
   finished), then `hftransfer rank recipes/T-rank.yaml --candidates C --compare DIR` with an
   empty feature cache (its whole-process wall time is what ranking costs), with `--pooling mean`
   and with `--pooling cls` (the default for these fine-tuning recipes).

    python scripts/bench_rank.py
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "runs" / "bench-rank"
sys.path.insert(0, str(Path(__file__).parent))
from _bench import update_section  # noqa: E402

SOURCES = {
    "conll": ["recipes/conll2003-full.yaml", "data.max_train_samples=4000", "train.num_train_epochs=1"],
    "sst2": ["recipes/sst2-full.yaml", "data.max_train_samples=3000", "train.num_train_epochs=1"],
}


def hftransfer(*args: str, env: dict | None = None) -> tuple[str, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "hftransfer", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    if done.returncode != 0:
        sys.exit(f"hftransfer {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout, time.perf_counter() - start


def main() -> None:
    if "--render-only" in sys.argv:
        render(json.loads((OUT / "results.json").read_text()))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    for name, command in SOURCES.items():
        if not (OUT / "sources" / name / "metrics.json").is_file():
            hftransfer("train", *command, "--output-dir", str(OUT / "sources" / name), "--overwrite")
    family = yaml.safe_load((REPO / "recipes/sources/minilm-family.yaml").read_text())
    store = OUT / "results.json"
    results = json.loads(store.read_text()) if store.exists() else {}
    for target in ("sst2", "cr"):
        candidates = {**family, "minilm-conll": str(OUT / "sources" / "conll")}
        if target == "cr":
            candidates["minilm-sst2"] = str(OUT / "sources" / "sst2")
        path = OUT / f"{target}-candidates.yaml"
        path.write_text(yaml.safe_dump(candidates, sort_keys=False))
        compare_dir = OUT / f"{target}-compare"
        printed_compare, compare_wall = hftransfer("compare", f"recipes/{target}-rank.yaml", "--sources", str(path),
                                     "--strategies", "full", "--label-budgets", "256", "--seeds", "3",
                                     "--no-scratch", "--output-dir", str(compare_dir))
        cells = json.loads((compare_dir / "results.json").read_text())["cells"]
        if "(0 trained now)" in printed_compare:  # every cell was finished before: keep the wall time they took
            compare_wall = results.get(target, {}).get("compare_wall_s", compare_wall)
        results[target] = {"cells": cells, "compare_wall_s": compare_wall}
        # The default (cls: what the fine-tuned head reads), then mean pooling (what a frozen
        # sentence-transformers probe would use); mean last, so the report's rank.json is cls's.
        for pooling in ("mean", "cls"):
            cache = OUT / f"cache-{target}-{time.time_ns()}"  # empty: the features are computed, not read
            printed, rank_wall = hftransfer("rank", f"recipes/{target}-rank.yaml", "--candidates", str(path),
                                            "--pooling", pooling, "--compare", str(compare_dir), "--output-dir",
                                            str(OUT / f"{target}-rank-{pooling}"), env={"HFTRANSFER_CACHE": str(cache)})
            results[target][pooling] = {
                "ranking": json.loads((OUT / f"{target}-rank-{pooling}" / "rank.json").read_text()),
                "rank_wall_s": rank_wall, "printed": printed}
            print(printed, flush=True)
        store.write_text(json.dumps(results, indent=2))
    render(results)


def render(results: dict) -> None:
    parts = []
    for target, r in results.items():
        cells = r["cells"]
        tuned: dict[str, list[float]] = {}
        for cell in cells:
            tuned.setdefault(cell["arm"], []).append(cell["validation"]["accuracy"])
        order = sorted(tuned, key=lambda a: -statistics.mean(tuned[a]))
        cls, mean = r["cls"]["ranking"], r["mean"]["ranking"]
        by_mean = {c["name"]: (i, c) for i, c in enumerate(mean["candidates"], 1)}
        rows = ["| candidate | fine-tuned val acc | fine-tuned rank | LogME (cls) | rank | probe acc (cls) | LEEP (cls) "
                "| LogME (mean) | rank |", "|---|---|---|---|---|---|---|---|---|"]
        for i, c in enumerate(cls["candidates"], 1):
            values = tuned[c["name"]]
            leep = "–" if c["leep"] is None else f"{c['leep']:.3f}"
            j, m = by_mean[c["name"]]
            rows.append(f"| {c['name']} | {100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f} "
                        f"| {order.index(c['name']) + 1} | {c['logme']:.4f} | {i} | {100 * c['probe_accuracy']:.1f} "
                        f"| {leep} | {m['logme']:.4f} | {j} |")
        finetune_s = sum(c["wall_s"] for c in cells)
        rank_s = r["cls"]["rank_wall_s"]
        rec = cls["recommendation"]
        tau = {p: r[p]["ranking"]["fine_tuned"]["kendall_tau"] for p in ("cls", "mean")}
        parts.append(
            f"### {target.upper()} (256 labels per class, {cls['examples']} training sentences)\n\n"
            + "\n".join(rows)
            + f"\n\nKendall's τ against the fine-tuned order: LogME **{tau['cls']['logme']:+.2f}** with the default "
            f"`cls` features (probe {tau['cls']['probe_accuracy']:+.2f}); with `--pooling mean` LogME "
            f"{tau['mean']['logme']:+.2f} (probe {tau['mean']['probe_accuracy']:+.2f}). Recommendation: {rec['best']} "
            f"({rec['confidence']}). Ranking all {len(cls['candidates'])} candidates took {rank_s:.0f} s (the whole "
            f"`rank` process with an empty feature cache; scoring alone {cls['seconds']:.0f} s); fine-tuning them in "
            f"`compare` took {r['compare_wall_s'] / 60:.1f} min wall ({len(cells)} cells), **1/"
            f"{r['compare_wall_s'] / rank_s:.0f}** of it; against the cells' own run time alone "
            f"({finetune_s / 60:.1f} min: checks, training, evaluation, without saving and start-up) "
            f"1/{finetune_s / rank_s:.0f}.")
    body = ("\n\n".join(parts) + "\n\nFine-tuned: `full`, 256 labels per class drawn per seed (0, 1, 2), best epoch on "
            "validation, mean ± std over the seeds; the order is by mean validation accuracy. Rank: frozen features "
            "of the recipe's 512 training sentences (seed 0's draw); `cls` (the default for a fine-tuning recipe) "
            "is the first token's output, what the fine-tuned classification head reads; `mean` is the "
            "sentence-transformers pooling. The CoNLL and SST-2 sources are MiniLM fine-tuned 1 epoch on 4,000 "
            "CoNLL-2003 / 3,000 SST-2 sentences; LEEP needs a head for the target's kind of input, so only the "
            "SST-2 run has one on CR.")
    update_section("Choosing the source before training (hftransfer rank)", "python scripts/bench_rank.py", body)


if __name__ == "__main__":
    main()
