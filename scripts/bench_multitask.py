"""Multi-task vs single-task: every task of a multi-task recipe against the same task trained
alone with the same number of steps on it.

    python scripts/bench_multitask.py                                  # recipes/multitask-sst2-conll.yaml
    python scripts/bench_multitask.py --recipe recipes/my-multitask.yaml
    python scripts/bench_multitask.py --set strategy.adapters=lora train.learning_rate=1e-3 \
        --out runs/bench-multitask-lora --section "Multi-task vs single-task, adapters"

The multi-task recipe runs as shipped (`hftransfer train RECIPE`). Each single-task run is built
from it: the same model, task, data and `train:` settings, strategy `full` (or `lora` with the same
PEFT settings when the multi-task run uses `adapters`), the task's own metric for picking the
best epoch. `--set` overrides apply to every run. With proportional sampling a multi-task epoch trains each task on
exactly ceil(n / batch) batches, the steps of one single-task epoch, so equal epochs mean equal
steps per task (the script checks the multi-task run's step count against that sum). The table
goes to the section "Multi-task vs single-task" of BENCHMARKS.md; run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from _bench import update_section  # noqa: E402


def run(recipe: str, out: Path, extra: list[str] = ()) -> tuple[dict, float]:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "hftransfer", "train", recipe, "train.disable_tqdm=true", *extra,
                    "--output-dir", str(out), "--overwrite"],
                   cwd=REPO, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads((REPO / out / "metrics.json").read_text()), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="recipes/multitask-sst2-conll.yaml")
    parser.add_argument("--out", default="runs/bench-multitask")
    parser.add_argument("--only", choices=["multi", "single", "table"], help="run one part (results accumulate)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="recipe overrides for every run, e.g. strategy.adapters=lora")
    parser.add_argument("--section", default="Multi-task vs single-task")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from hftransfer.recipe import load_recipe
    from hftransfer.registry import get_task

    recipe = load_recipe(REPO / args.recipe, args.set)
    assert recipe.is_multitask and recipe.strategy_options.sampling == "proportional", \
        "equal steps per task need a multi-task recipe with proportional sampling"
    out = Path(args.out)
    results_path = REPO / out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}

    if args.only in (None, "multi"):
        metrics, wall = run(args.recipe, out / "multitask", args.set)
        results["multitask"] = {"metrics": metrics, "wall_s": wall}
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=2))
    o = recipe.strategy_options
    strategy = {"name": "lora", "peft": {**o.peft, "method": o.adapters}} if o.adapters else {"name": "full"}
    if args.only in (None, "single"):
        for name, entry in recipe.members.items():
            primary = get_task(entry.task_type).primary_metric
            single = {"name": f"single-{name}", "model": recipe.to_dict()["model"], "task": entry.task,
                      "data": recipe.to_dict()["tasks"][name]["data"], "strategy": strategy,
                      "train": {**recipe.train, "metric_for_best_model": primary}}
            path = REPO / out / f"single-{name}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump(single, sort_keys=False))
            metrics, wall = run(str(path), out / f"single-{name}")
            results[f"single-{name}"] = {"metrics": metrics, "wall_s": wall}
            results_path.write_text(json.dumps(results, indent=2))

    multi = results["multitask"]["metrics"]
    batch = recipe.train.get("per_device_train_batch_size", 32)
    epochs = int(recipe.train.get("num_train_epochs", 3))  # proportional sampling: whole epochs
    steps = {n: math.ceil(multi["data"][n]["train"] / batch) * epochs for n in recipe.members}
    assert sum(steps.values()) == multi["train"]["steps"], (steps, multi["train"]["steps"])
    lines = ["| task | metric | steps on the task | single-task validation | multi-task validation | "
             "difference | single-task test | multi-task test | trained for the task (multi-task) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, entry in recipe.members.items():
        primary = get_task(entry.task_type).primary_metric
        single = results[f"single-{name}"]["metrics"]
        assert single["train"]["steps"] == steps[name], (name, single["train"]["steps"], steps[name])
        sv, mv = single["validation"][primary], multi["validation"][name][primary]
        share = multi["params"]["tasks"][name]
        lines.append(f"| `{name}` ({entry.task_type}) | {primary} | {steps[name]:,} | {sv:.4f} | {mv:.4f} | "
                     f"{100 * (mv - sv):+.2f} pts | {single['test'][primary]:.4f} | {multi['test'][name][primary]:.4f} | "
                     f"{share['trainable']:,} of {share['total']:,} ({share['percent']:.2f} %) |")
    walls = ", ".join(f"{k} {v['wall_s'] / 60:.1f} min" for k, v in results.items())
    body = "\n".join(lines) + (
        f"\n\nRecipe `{args.recipe}`" + (f" with `{' '.join(args.set)}`" if args.set else " as shipped") +
        ": one shared encoder (the embedded MiniLM), a head per task, "
        f"batch {batch}, {epochs} epochs, proportional sampling ({multi['train']['steps']:,} steps in all), "
        "best epoch by the combined validation score. Each single-task run: the same settings with "
        f"strategy `{strategy['name']}` and the best epoch by its own metric. The difference is multi-task minus "
        f"single-task on validation. Wall time, whole process: {walls}." + (
            " With adapters the tasks share no trained weight (the encoder is frozen): one base serves "
            "both adapters, and the differences come from the schedule and the epoch chosen on the "
            "combined score." if o.adapters else ""))
    command = f"python scripts/bench_multitask.py --recipe {args.recipe}" + (
        f" --set {' '.join(args.set)} --out {args.out} --section {args.section!r}" if args.set else "")
    update_section(args.section, command, body)
    print(body)


if __name__ == "__main__":
    main()
