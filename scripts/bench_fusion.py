"""Knowledge fusion on cross-domain sentiment: the SST-2 model (movie reviews) as the source, CR
(product reviews) as the target; and weight-space fusion of SST-2 models.

    target-only   the embedded MiniLM fine-tuned on CR alone (strategy full)
    logits        + the frozen SST-2 model's logits through a learned map (strategy fusion)
    features      + the frozen SST-2 model's pooled features into the head (strategy fusion)
    ensemble      hftransfer ensemble of the target-only run and the SST-2 model (fit on CR validation)
    calibrated    hftransfer calibrate of the target-only run (ECE before/after)

each at 16 and 64 labels per class (5 seeds) and all labels (--seeds-all seeds), every cell from
recipes/cr-fusion.yaml with one change; then a WiSE-FT sweep of the SST-2 model (its linear probe,
a feature-extraction run with cls pooling, at α = 0) evaluated on SST-2, MR and CR test, and a
greedy soup of four 64-label CR target-only runs against its best ingredient.

Each run is its own process; results are kept in runs/bench-fusion/results.json, so the script
can be run a part at a time (--only target,logits) and resumes where it stopped.

    python scripts/bench_fusion.py
    python scripts/bench_fusion.py --only wise,soup
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "runs" / "bench-fusion"
DATA = REPO.parent / "shared" / "data"
SOURCE = "runs/sst2-full"
PROBE = "runs/sst2-probe"
sys.path.insert(0, str(Path(__file__).parent))
from _bench import mean_std, update_section  # noqa: E402

RECIPE = "recipes/cr-fusion.yaml"
METHODS = {"target-only": ["strategy={name: full}"], "logits": [], "features": ["strategy.combine=features"]}
ALL_EPOCHS = ["train.num_train_epochs=3"]  # 3,016 labels: a few epochs suffice
ALPHAS = [round(0.1 * i, 1) for i in range(11)]
# Checkpoints without optimizer state (model selection reloads only the weights): less disk time.
QUIET = ["train.disable_tqdm=true", "train.save_only_model=true"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def kit(*args: str) -> str:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "hftransfer", *args], cwd=REPO, capture_output=True, text=True, env=ENV)
    if done.returncode != 0:
        sys.exit(f"hftransfer {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    kit.seconds = time.perf_counter() - start
    return done.stdout


def metrics_of(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def budget_overrides(budget: str) -> list[str]:
    return ["data.samples_per_label=null", *ALL_EPOCHS] if budget == "all" else [f"data.samples_per_label={budget}"]


def ensure(run: str, recipe: str, *overrides: str) -> None:
    if not (REPO / run / "metrics.json").exists():
        print(f"training {run} ...", flush=True)
        kit("train", recipe, *overrides, "train.disable_tqdm=true", "--output-dir", run)


def cells(budgets: list[str], seeds: int, seeds_all: int) -> list[tuple[str, str, int]]:
    return [(method, budget, seed) for budget in budgets for seed in range(seeds_all if budget == "all" else seeds)
            for method in (*METHODS, "ensemble", "calibrated")]


def run_cell(method: str, budget: str, seed: int) -> dict:
    name = f"{method}-{budget}-s{seed}"
    run = OUT / name
    target = OUT / f"target-only-{budget}-s{seed}"
    if method in METHODS:
        kit("train", RECIPE, *METHODS[method], *budget_overrides(budget), f"train.seed={seed}", f"data.seed={seed}",
            *QUIET, "--output-dir", str(run), "--overwrite")
        m = metrics_of(run)
        return {"validation": m["validation"], "test": m["test"], "wall_s": kit.seconds,
                "samples_per_second": m["train"]["samples_per_second"], "params": m["params"]["trainable"]}
    if method == "ensemble":
        kit("ensemble", str(target), SOURCE, "--output-dir", str(run), "--overwrite")
        m = metrics_of(run)
        return {"validation": m["validation"], "test": m["test"], "wall_s": kit.seconds,
                "weights": [x["weight"] for x in m["ensemble"]["members"]]}
    kit("calibrate", str(target), "--output-dir", str(run), "--overwrite")
    c = metrics_of(run)["calibration"]
    return {"validation": c["validation"]["after"], "test": c["test"]["after"], "before": {
        "validation": c["validation"]["before"], "test": c["test"]["before"]}, "temperature": c["temperature"],
        "wall_s": kit.seconds}


def source_on_cr() -> dict:
    out = {}
    for split in ("validation", "test"):
        out[split] = json.loads(kit("evaluate", SOURCE, "--data", str(DATA / "cr" / f"{split}.csv")))
    return out


# The α = 0 end of WiSE-FT: the SST-2 source with a probe. "head": the encoder frozen, only its own
# head (pooler + classifier) trained, so both ends have the same form; "features": the
# feature-extraction run (cls pooling, linear head), whose head is written into the pooler as
# 0.01·I and the classifier as W/0.01: a different parametrisation of a linear probe.
PROBES = {"head": ("runs/sst2-head-probe", "recipes/sst2-full.yaml",
                   ["strategy={name: partial-freeze, freeze_layers: 6}", "train.learning_rate=1e-3",
                    "train.num_train_epochs=3"]),
          "features": (PROBE, "recipes/sst2-feature-extraction.yaml", ["strategy.pooling=cls", "strategy.head=linear"])}


def wise_sweep(probe: str) -> dict:
    start, recipe, overrides = PROBES[probe]
    ensure(start, recipe, *overrides)
    rows = []
    for alpha in ALPHAS:
        run = OUT / f"wise-{probe}-{alpha}"
        kit("interpolate", SOURCE, "--start", start, "--alpha", str(alpha), "--output-dir", str(run), "--overwrite")
        m = metrics_of(run)
        row = {"alpha": alpha, "sst2_validation": m["validation"]["accuracy"], "sst2_test": m["test"]["accuracy"]}
        for name in ("mr", "cr"):
            row[f"{name}_test"] = json.loads(kit("evaluate", str(run), "--data", str(DATA / name / "test.csv")))["accuracy"]
        rows.append(row)
        print(f"wise ({probe}) α={alpha}: {row}", flush=True)
        if alpha not in (0.0, 1.0):
            kit_rm(run)
    kit("interpolate", SOURCE, "--start", start, "--output-dir", str(OUT / f"wise-{probe}-chosen"), "--overwrite")
    return {"rows": rows, "start": start,
            "chosen_alpha": metrics_of(OUT / f"wise-{probe}-chosen")["interpolation"]["chosen_alpha"]}


def kit_rm(run: Path) -> None:
    """A swept model is scored; its 90 MB copy is not kept."""
    import shutil

    shutil.rmtree(run, ignore_errors=True)


def soup(results: dict) -> dict:
    members = [OUT / f"target-only-64-s{seed}" for seed in range(4)]
    missing = [m for m in members if not (m / "metrics.json").exists()]
    if missing:
        sys.exit(f"soup: train the 64-label target-only runs first ({', '.join(map(str, missing))})")
    kit("soup", *map(str, members), "--output-dir", str(OUT / "soup"), "--overwrite")
    m = metrics_of(OUT / "soup")
    best = max(members, key=lambda r: metrics_of(r)["validation"]["accuracy"])
    return {"soup": {"validation": m["validation"], "test": m["test"], "used": m["soup"]["used"],
                     "uniform": m["soup"]["uniform"], "greedy": m["soup"]["greedy"]},
            "best": {"run": best.name, "validation": metrics_of(best)["validation"], "test": metrics_of(best)["test"]}}


def render(results: dict) -> str:
    budgets = sorted({k.split("-")[-2] for k in results.get("cells", {})}, key=lambda b: (b == "all", int(b) if b.isdigit() else 0))
    rows = ["| method | labels per class | seeds | validation acc | test acc | test NLL | test ECE | train samples/s |",
            "|---|---|---|---|---|---|---|---|"]
    cells = results.get("cells", {})
    for budget in budgets:
        for method in (*METHODS, "ensemble", "calibrated"):
            got = [v for k, v in cells.items() if k.startswith(f"{method}-{budget}-s")]
            if not got:
                continue
            nll = [g["test"].get("nll", g["test"].get("loss")) for g in got]
            ece = [g["test"]["ece"] for g in got if "ece" in g["test"]]
            sps = [g["samples_per_second"] for g in got if "samples_per_second" in g]
            rows.append(f"| {method} | {budget} | {len(got)} | {mean_std([g['validation']['accuracy'] for g in got])} "
                        f"| {mean_std([g['test']['accuracy'] for g in got])} | {statistics.mean(nll):.3f} "
                        f"| {f'{statistics.mean(ece):.3f}' if ece else '–'} "
                        f"| {f'{statistics.mean(sps):.1f}' if sps else '–'} |")
    text = "\n".join(rows)
    gains = []
    for budget in budgets:
        for method in ("logits", "features", "ensemble"):
            pairs = [(cells[f"{method}-{budget}-s{s}"]["test"]["accuracy"], cells[f"target-only-{budget}-s{s}"]["test"]["accuracy"])
                     for s in range(10) if f"{method}-{budget}-s{s}" in cells and f"target-only-{budget}-s{s}" in cells]
            if pairs:
                gains.append(f"{method} − target-only at {budget}: {mean_std([a - b for a, b in pairs])} points "
                             f"(test, {len(pairs)} paired seeds)")
    if gains:
        text += "\n\nGain over target-only, same seeds and labels: " + "; ".join(gains) + "."
    calibrated = [v for k, v in cells.items() if k.startswith("calibrated-")]
    if calibrated:
        text += ("\n\nCalibration of the target-only runs (`hftransfer calibrate`), mean over all its cells: ECE "
                 f"test {statistics.mean(c['before']['test']['ece'] for c in calibrated):.3f} → "
                 f"{statistics.mean(c['test']['ece'] for c in calibrated):.3f}, NLL test "
                 f"{statistics.mean(c['before']['test']['nll'] for c in calibrated):.3f} → "
                 f"{statistics.mean(c['test']['nll'] for c in calibrated):.3f} (accuracy unchanged by construction).")
    if "source" in results:
        s = results["source"]
        text += (f"\n\nThe SST-2 source alone on CR (no CR labels): validation {100 * s['validation']['accuracy']:.1f}, "
                 f"test {100 * s['test']['accuracy']:.1f}.")
    for probe, what in (("head", "its own head (pooler + classifier) trained on the frozen encoder: "
                                 "`recipes/sst2-full.yaml` as partial-freeze of all 6 layers, lr 1e-3, 3 epochs"),
                        ("features", "the feature-extraction probe (`recipes/sst2-feature-extraction.yaml`, cls "
                                     "pooling, linear head), whose head the kit writes into the pooler as 0.01·I and "
                                     "the classifier as W/0.01")):
        w = results.get(f"wise-{probe}")
        if not w:
            continue
        text += (f"\n\nWiSE-FT of the SST-2 model, α = 0: {what}; α = 1: `runs/sst2-full`. Accuracy:\n\n"
                 "| α | SST-2 validation | SST-2 test (in domain) | MR test | CR test |\n|---|---|---|---|---|\n"
                 + "\n".join(f"| {r['alpha']} | {100 * r['sst2_validation']:.1f} | {100 * r['sst2_test']:.1f} "
                             f"| {100 * r['mr_test']:.1f} | {100 * r['cr_test']:.1f} |" for r in w["rows"])
                 + f"\n\n`hftransfer interpolate` chose α = {w['chosen_alpha']} on SST-2 validation.")
    if "soup" in results:
        s = results["soup"]
        text += (f"\n\nGreedy soup of the four 64-label CR target-only runs (seeds 0–3; ingredients used: "
                 f"{', '.join(Path(u).name for u in s['soup']['used'])}): validation {100 * s['soup']['validation']['accuracy']:.1f}, "
                 f"test {100 * s['soup']['test']['accuracy']:.1f}; its best ingredient `{s['best']['run']}`: validation "
                 f"{100 * s['best']['validation']['accuracy']:.1f}, test {100 * s['best']['test']['accuracy']:.1f}; "
                 f"uniform soup validation {100 * s['soup']['uniform']['validation']['accuracy']:.1f}.")
    text += ("\n\nEvery cell: `recipes/cr-fusion.yaml` (lr 1e-4, 10 epochs, batch 16, best epoch on validation; "
             "all labels: 3 epochs) with the change its method says, the label budget drawn per seed (`data.seed`); "
             "CR validation 377 / test 378 rows, never shrunk. Model selection on validation only; test read once "
             "per cell. ± is the standard deviation over seeds. train samples/s is the Trainer's, whose time includes "
             "the per-epoch evaluations (the fusion cells read cached source outputs there too).")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="source,cells,wise,soup")
    parser.add_argument("--budgets", default="16,64,all")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--seeds-all", type=int, default=1)
    parser.add_argument("--methods", default=",".join([*METHODS, "ensemble", "calibrated"]))
    args = parser.parse_args()
    parts = set(args.only.split(","))
    OUT.mkdir(parents=True, exist_ok=True)
    store = OUT / "results.json"
    results = json.loads(store.read_text()) if store.exists() else {}
    results.setdefault("cells", {})
    ensure(SOURCE, "recipes/sst2-full.yaml")
    if "source" in parts and "source" not in results:
        results["source"] = source_on_cr()
        store.write_text(json.dumps(results, indent=2))
    if "cells" in parts:
        methods = set(args.methods.split(","))
        for method, budget, seed in cells(args.budgets.split(","), args.seeds, args.seeds_all):
            name = f"{method}-{budget}-s{seed}"
            if method not in methods or name in results["cells"]:
                continue
            results["cells"][name] = run_cell(method, budget, seed)
            store.write_text(json.dumps(results, indent=2))
            print(f"{name}: test {results['cells'][name]['test']['accuracy']:.4f}", flush=True)
    for probe in PROBES:
        if f"wise-{probe}" in parts or ("wise" in parts and probe == "head"):
            results[f"wise-{probe}"] = wise_sweep(probe)
            store.write_text(json.dumps(results, indent=2))
    if "soup" in parts:
        results["soup"] = soup(results)
        store.write_text(json.dumps(results, indent=2))
    update_section("Knowledge fusion: SST-2 source, CR target", "python scripts/bench_fusion.py", render(results))


if __name__ == "__main__":
    main()
