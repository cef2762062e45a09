"""Staged transfer and domain adaptation on cross-domain sentiment: movies (SST-2, MR) -> products (CR).

    direct   the embedded MiniLM fine-tuned on CR alone
    sst2     SST-2 first, then CR (the stages of recipes/staged-sst2-cr.yaml)
    mr       MR first (1 epoch), then CR (the same pipeline with the first stage's data changed)
    tapt     masked-LM adaptation on CR's training texts, then CR (recipes/cr-tapt.yaml)

each at 16 and 64 labels per class, 5 seeds: the CR stage of each pipeline trained again per seed
and budget from the pipeline's first-stage model (the first stages are trained once, seed 0). Then
the forgetting of SST-2 after each SST-2 -> CR cell, and DANN (recipes/sst2-cr-dann.yaml: SST-2
labelled, CR texts unlabelled, no CR labels) against the same recipe without the domain
adversary, both evaluated on CR test, and the SST-2 stage model evaluated on CR as is.

Each run is its own process; results are kept in runs/bench-domains/results.json, so the script
resumes where it stopped and can run a part at a time (--only sources,cells,forgetting,dann).

    python scripts/bench_domains.py
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "runs" / "bench-domains"
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(Path(__file__).parent))
from _bench import mean_std, update_section  # noqa: E402

STAGED = REPO / "recipes" / "staged-sst2-cr.yaml"
TAPT = REPO / "recipes" / "cr-tapt.yaml"
DANN = REPO / "recipes" / "sst2-cr-dann.yaml"
CONDITIONS = ("direct", "sst2", "mr", "tapt")
DANN_DATA = ["data.max_train_samples=1000"]  # of SST-2's 6,920 labelled sentences: 2 cores
QUIET = ["train.disable_tqdm=true", "train.save_only_model=true"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def kit(*args: str) -> str:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "hftransfer", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, env=ENV)
    if done.returncode != 0:
        sys.exit(f"hftransfer {' '.join(map(str, args))} failed:\n{done.stderr[-3000:]}")
    kit.seconds = time.perf_counter() - start
    return done.stdout


def metrics_of(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def pipelines() -> dict[str, Path]:
    """The pipeline each condition's first stage comes from (trained once, seed 0)."""
    mr = yaml.safe_load(STAGED.read_text())
    first = mr["stages"][0]
    first.update(name="mr", data={s: str(DATA / "mr" / f"{s}.csv") for s in ("train", "validation", "test")})
    first["train"] = {**first.get("train", {}), "num_train_epochs": 1}  # 8,530 sentences
    mr["name"] = "staged-mr-cr"
    (OUT / "staged-mr-cr.yaml").write_text(yaml.safe_dump(mr, sort_keys=False))
    return {"sst2": STAGED, "mr": OUT / "staged-mr-cr.yaml", "tapt": TAPT}


def train_pipelines(results: dict, conditions: list[str]) -> None:
    for condition, recipe in pipelines().items():
        if condition not in conditions:
            continue
        run = OUT / f"pipeline-{condition}"
        if not (run / "metrics.json").exists():
            print(f"training pipeline {condition} ({recipe.name}) ...", flush=True)
            kit("train", recipe, *QUIET, "--output-dir", run)
            results.setdefault("pipeline_seconds", {})[condition] = round(kit.seconds, 1)
        results.setdefault("pipelines", {})[condition] = metrics_of(run)
    if "tapt" in conditions:
        adapted = metrics_of(first_stage("tapt"))
        results.setdefault("tapt_stage", {}).update(before=adapted["before"]["validation"]["perplexity"],
                                                    after=adapted["validation"]["perplexity"])


def tapt_control(results: dict) -> None:
    """The masked-LM stage of recipes/cr-tapt.yaml with the encoder frozen (only the new head
    trains, the same steps): what the head alone lowers the perplexity to, so that the adapted
    encoder's own share shows."""
    staged = yaml.safe_load(TAPT.read_text())
    stage = staged["stages"][0]
    recipe = {"name": "cr-mlm-head-only", "model": staged["model"], "task": stage["task"], "data": stage["data"],
              "strategy": {"name": "partial-freeze", "freeze_layers": 6, "freeze_embeddings": True},
              "train": {**staged["train"], **stage["train"]}}
    path = OUT / "cr-mlm-head-only.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    run = OUT / "cr-mlm-head-only"
    if not (run / "metrics.json").exists():
        kit("train", path, *QUIET, "--output-dir", run)
    results.setdefault("tapt_stage", {})["head_only"] = metrics_of(run)["validation"]["perplexity"]


def first_stage(condition: str) -> Path:
    return next((OUT / f"pipeline-{condition}" / "stages").glob("1-*"))


def cr_recipe() -> Path:
    """The CR stage of recipes/staged-sst2-cr.yaml as a recipe of its own."""
    staged = yaml.safe_load(STAGED.read_text())
    stage = staged["stages"][-1]
    recipe = {"name": "cr", "model": staged["model"], "task": stage["task"], "data": stage["data"],
              "strategy": stage.get("strategy", {"name": "full"}), "train": {**staged["train"], **stage["train"]}}
    path = OUT / "cr.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def run_cell(condition: str, budget: int, seed: int) -> dict:
    run = OUT / f"{condition}-{budget}-s{seed}"
    if not (run / "metrics.json").exists():
        source = "embedded" if condition == "direct" else str(first_stage(condition))
        kit("train", cr_recipe(), f"model.name_or_path={source}", f"data.samples_per_label={budget}",
            f"train.seed={seed}", *QUIET, "--output-dir", run)
    m = metrics_of(run)
    return {"validation": m["validation"], "test": m["test"], "wall_s": m["train"]["wall_s"]}


def forgetting_of(cell: Path) -> dict:
    """SST-2 validation accuracy with the SST-2 stage's head on the encoder of an SST-2 -> CR cell."""
    from hftransfer.pipeline import forgetting
    from hftransfer.recipe import load_recipe
    from hftransfer.recipe.stages import StagedRecipe

    stages = [first_stage("sst2"), cell]
    staged = StagedRecipe("bench", ["sst2", "cr"], [load_recipe(d / "recipe.yaml") for d in stages], {})
    return forgetting(staged, stages, [metrics_of(d) for d in stages])["sst2"]


def dann_cell(kind: str, seed: int) -> dict:
    run = OUT / f"{kind}-s{seed}"
    if not (run / "metrics.json").exists():
        extra = [] if kind == "dann" else ["strategy={name: full}", "data.unlabeled=null"]
        kit("train", DANN, *extra, *DANN_DATA, f"train.seed={seed}", *QUIET, "--output-dir", run)
    m = metrics_of(run)
    out = {"validation": m["validation"], "test": m["test"], "wall_s": m["train"]["wall_s"]}
    if m["strategy"] == "dann":
        out["dann"] = m["transfer"]
    return out


def render(results: dict) -> str:
    cells = results.get("cells", {})
    rows = ["| CR stage from | labels per class | seeds | CR validation acc | CR test acc | gain over direct (test, paired) |",
            "|---|---|---|---|---|---|"]
    names = {"direct": "the embedded MiniLM (direct)", "sst2": "SST-2 stage (staged)", "mr": "MR stage (staged)",
             "tapt": "masked-LM on CR texts (TAPT)"}
    for budget in (16, 64):
        for condition in CONDITIONS:
            got = {s: cells[f"{condition}-{budget}-s{s}"] for s in range(10) if f"{condition}-{budget}-s{s}" in cells}
            if not got:
                continue
            gains = [got[s]["test"]["accuracy"] - cells[f"direct-{budget}-s{s}"]["test"]["accuracy"]
                     for s in got if f"direct-{budget}-s{s}" in cells]
            rows.append(f"| {names[condition]} | {budget} | {len(got)} "
                        f"| {mean_std([g['validation']['accuracy'] for g in got.values()])} "
                        f"| {mean_std([g['test']['accuracy'] for g in got.values()])} "
                        f"| {'–' if condition == 'direct' else mean_std(gains) + ' points'} |")
    text = "\n".join(rows)
    pipes = results.get("pipelines", {})
    if pipes:
        text += "\n\nFirst stages (trained once, seed 0; each pipeline's own CR stage is its 16-label seed-0 cell):\n"
        for condition, m in pipes.items():
            stage = m["stages"][0]
            value = stage.get("validation")
            shown = f"validation {stage['metric']} {value:.4f}" if isinstance(value, (int, float)) else ""
            if condition == "tapt" and isinstance(m.get("stages"), list):
                before = (results.get("tapt_stage") or {}).get("before")
                after = (results.get("tapt_stage") or {}).get("after")
                head_only = (results.get("tapt_stage") or {}).get("head_only")
                if before and after:
                    shown = (f"CR validation perplexity {before:.0f} (the embedded MiniLM with its new, untrained "
                             f"masked-LM head) -> {after:.1f} after adaptation"
                             + (f"; {head_only:.1f} when only the head trains (encoder frozen, same steps)"
                                if head_only else ""))
            text += (f"\n- {condition}: `{stage['name']}` ({stage['task']}, {stage['train_examples']} examples), "
                     f"{shown}; {stage['wall_s']:.0f} s")
    forgot = results.get("forgetting", {})
    if forgot:
        text += "\n\nForgetting of SST-2 after its CR stage (SST-2 validation accuracy, the SST-2 head on the final encoder):\n\n"
        text += "| labels per class | seeds | before | after | drop |\n|---|---|---|---|---|\n"
        for budget in (16, 64):
            got = [v for k, v in forgot.items() if k.startswith(f"sst2-{budget}-")]
            if got:
                text += (f"| {budget} | {len(got)} | {100 * got[0]['before']:.1f} | {mean_std([g['after'] for g in got])} "
                         f"| {mean_std([g['drop'] for g in got])} points |\n")
    dann = results.get("dann", {})
    if dann:
        text += ("\n\nDomain-adversarial training (`recipes/sst2-cr-dann.yaml`: SST-2 labelled, CR training texts "
                 "unlabelled, 1,000 SST-2 sentences, model selection on SST-2 validation, no CR labels anywhere), CR test accuracy:\n\n"
                 "| strategy | seeds | SST-2 validation acc | CR test acc | domain-classifier accuracy, last epoch |\n"
                 "|---|---|---|---|---|\n")
        for kind, label in (("source-only", "full (no domain adversary)"), ("dann", "dann")):
            got = [v for k, v in dann.items() if k.startswith(f"{kind}-s")]
            if got:
                domain = [g["dann"]["final_domain_accuracy"] for g in got if "dann" in g]
                text += (f"| {label} | {len(got)} | {mean_std([g['validation']['accuracy'] for g in got])} "
                         f"| {mean_std([g['test']['accuracy'] for g in got])} | {mean_std(domain) if domain else '–'} |\n")
        pairs = [dann[f"dann-s{s}"]["test"]["accuracy"] - dann[f"source-only-s{s}"]["test"]["accuracy"]
                 for s in range(10) if f"dann-s{s}" in dann and f"source-only-s{s}" in dann]
        if pairs:
            text += f"\nDANN − source-only on CR test, paired by seed: {mean_std(pairs)} points."
    if "sst2_on_cr" in results:
        s = results["sst2_on_cr"]
        text += (f"\n\nThe SST-2 stage model on CR as is (no CR labels; trained on all 6,920 SST-2 sentences for "
                 f"2 epochs, more labelled data than the 1,000 of the DANN rows): CR test accuracy {100 * s['accuracy']:.1f}.")
    text += ("\n\nEvery CR cell: the CR stage of `recipes/staged-sst2-cr.yaml` (lr 1e-4, 10 epochs, batch 16, best "
             "epoch on CR validation), the label budget drawn per seed (`data.seed` = the seed), the same sample for "
             "every condition at a (budget, seed); CR validation 377 / test 378 rows, never shrunk; test read once per "
             "cell. ± is the standard deviation over seeds.")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="sources,cells,forgetting,dann")
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--budgets", default="16,64")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    parts, conditions = set(args.only.split(",")), args.conditions.split(",")
    OUT.mkdir(parents=True, exist_ok=True)
    store = OUT / "results.json"
    results = json.loads(store.read_text()) if store.exists() else {}

    def save() -> None:  # merged with what another part, run at the same time, saved meanwhile
        current = json.loads(store.read_text()) if store.exists() else {}
        for key, value in results.items():
            if isinstance(value, dict) and isinstance(current.get(key), dict):
                current[key].update(value)
            else:
                current[key] = value
        results.clear()
        results.update(current)
        store.write_text(json.dumps(results, indent=2))

    if "sources" in parts:
        train_pipelines(results, conditions)
        save()
    if "cells" in parts:
        for budget in map(int, args.budgets.split(",")):
            for seed in range(args.seeds):
                for condition in conditions:
                    name = f"{condition}-{budget}-s{seed}"
                    if name not in results.setdefault("cells", {}):
                        results["cells"][name] = run_cell(condition, budget, seed)
                        save()
                        print(f"{name}: CR test {results['cells'][name]['test']['accuracy']:.4f}", flush=True)
    if "forgetting" in parts:
        for name in [k for k in results.get("cells", {}) if k.startswith("sst2-")]:
            if name not in results.setdefault("forgetting", {}):
                results["forgetting"][name] = forgetting_of(OUT / name)
                save()
        if "sst2_on_cr" not in results:
            out = kit("evaluate", first_stage("sst2"), "--data", DATA / "cr" / "test.csv")
            results["sst2_on_cr"] = json.loads(out)
            save()
    if "tapt-control" in parts:
        tapt_control(results)
        save()
    if "dann" in parts:
        for seed in range(args.seeds):
            for kind in ("source-only", "dann"):
                name = f"{kind}-s{seed}"
                if name not in results.setdefault("dann", {}):
                    results["dann"][name] = dann_cell(kind, seed)
                    save()
                    print(f"{name}: CR test {results['dann'][name]['test']['accuracy']:.4f}", flush=True)
    update_section("Staged transfer and domain adaptation (movies -> products)",
                   "python scripts/bench_domains.py", render(results))


if __name__ == "__main__":
    main()
