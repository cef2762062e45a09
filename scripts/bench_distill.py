"""Distillation and cross-architecture students: what a smaller network keeps of a fine-tuned one.

SST-2, teacher = the shipped recipes/sst2-full.yaml run (runs/sst2-full, trained first if missing).
3-layer students of the embedded MiniLM, each from recipes/sst2-distill.yaml with one change:

    init:  random (model.init.weights=random) | bottom (layers 0-2) | uniform (layers 0, 3, 5)
    loss:  ce (strategy.alpha=0: exactly full fine-tuning) | kd (alpha 0.5, T 2)
           | kd+mr (kd, plus the MR training sentences as an unlabelled transfer set)

plus a width-192 student (6 layers, weight selection) and its random-init twin with 2,000
SST-2 labels (CE only), and an image row: the digits ViT source (4 layers) -> 2-layer students.
Every run's prediction speed is measured at the end, all in this process: the whole validation set,
the same batches of 32 (length-sorted), the fastest of 5 passes, the passes of all models interleaved.

Each run is its own `hftransfer train` process; results are kept in runs/bench-distill/results.json
so runs can be made a few at a time (--only); the table is re-rendered from all results so far.

    python scripts/bench_distill.py                     # everything
    python scripts/bench_distill.py --only uniform-kd,random-ce
    python scripts/bench_distill.py --speed              # measure every prediction speed again
                                                         # (on a quiet machine), nothing trained
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
OUT = REPO / "runs" / "bench-distill"
SST2 = REPO.parent / "shared" / "data" / "sst2"
sys.path.insert(0, str(Path(__file__).parent))
from _bench import update_section  # noqa: E402

# The shipped recipe is the best of these (bottom, kd+mr); each row states its own layer map.
INITS = {"random": ["model.init.weights=random"], "bottom": ["model.init.layers=bottom"],
         "uniform": ["model.init.layers=uniform"]}
LOSSES = {"ce": ["strategy.alpha=0", "data.unlabeled=null"], "kd": ["data.unlabeled=null"], "kd+mr": []}
WIDTH = ["model.init={hidden_size: 192, intermediate_size: 768}", "data.max_train_samples=2000",
         "strategy.alpha=0", "data.unlabeled=null"]
LONGER = ["train.learning_rate=3e-4", "train.num_train_epochs=10"]
DIGITS_STUDENT = ["model.name_or_path=runs/digits-source", "model.config=null", "model.init={num_hidden_layers: 2}",
                  "strategy={name: distill, teacher: runs/digits-source}"]

# name -> (recipe, overrides, teacher run)
RUNS: dict[str, tuple[str, list[str], str | None]] = {
    **{f"{i}-{loss}": ("recipes/sst2-distill.yaml", INITS[i] + LOSSES[loss], "runs/sst2-full")
       for loss in LOSSES for i in INITS},
    "width192-selected": ("recipes/sst2-distill.yaml", WIDTH, "runs/sst2-full"),
    "width192-random": ("recipes/sst2-distill.yaml", WIDTH + ["model.init.weights=random"], "runs/sst2-full"),
    # The same pair trained longer at a higher rate (what suits the random twin better).
    "width192-selected-long": ("recipes/sst2-distill.yaml", WIDTH + LONGER, "runs/sst2-full"),
    "width192-random-long": ("recipes/sst2-distill.yaml", WIDTH + LONGER + ["model.init.weights=random"], "runs/sst2-full"),
    "digits-ce": ("recipes/digits-source.yaml", DIGITS_STUDENT + ["strategy.alpha=0"], "runs/digits-source"),
    "digits-kd": ("recipes/digits-source.yaml", DIGITS_STUDENT, "runs/digits-source"),
    "digits-random": ("recipes/digits-source.yaml",
                      DIGITS_STUDENT + ["strategy.alpha=0", "model.init={num_hidden_layers: 2, weights: random}"],
                      "runs/digits-source"),
}
TEACHERS = {"runs/sst2-full": "recipes/sst2-full.yaml", "runs/digits-source": "recipes/digits-source.yaml"}


def train(recipe: str, overrides: list[str], run_dir: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "hftransfer", "train", recipe, *overrides,
                           "train.disable_tqdm=true", "--output-dir", str(run_dir), "--overwrite"],
                          cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    if done.returncode != 0:
        sys.exit(f"{recipe} {overrides} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def ensure_teacher(run: str) -> None:
    if (REPO / run / "metrics.json").exists():
        return
    if "digits" in run and not (REPO / "data" / "digits").exists():
        subprocess.run([sys.executable, "scripts/make_digits.py"], cwd=REPO, check=True)
    print(f"training the teacher {run} ...", flush=True)
    train(TEACHERS[run], [], REPO / run)


def inputs_of(run: Path) -> tuple[str, list]:
    """The validation inputs of a run's task: SST-2 texts, or the digits images."""
    metrics = json.loads((run / "metrics.json").read_text())
    if metrics["task"] == "text-classification":
        import csv

        with open(SST2 / "validation.csv", newline="", encoding="utf-8") as f:
            return "text", [row["text"] for row in csv.DictReader(f)]
    from PIL import Image

    folder = REPO / "data" / "digits" / "source" / "validation"
    return "image", [Image.open(p).convert("RGB") for p in sorted(folder.glob("*/*.png"))]


def prediction_batches(run: Path, batch_size: int = 32):
    """A run's model and its whole validation set in batches of 32 (text: length-sorted)."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification, \
        AutoModelForSequenceClassification, AutoTokenizer

    kind, inputs = inputs_of(run)
    if kind == "text":
        model = AutoModelForSequenceClassification.from_pretrained(run).eval()
        tokenizer = AutoTokenizer.from_pretrained(run)
        inputs = sorted(inputs, key=len)
        batches = [tokenizer(inputs[i:i + batch_size], padding=True, truncation=True, return_tensors="pt")
                   for i in range(0, len(inputs), batch_size)]
    else:
        model = AutoModelForImageClassification.from_pretrained(run).eval()
        processor = AutoImageProcessor.from_pretrained(run)
        batches = [processor(inputs[i:i + batch_size], return_tensors="pt")
                   for i in range(0, len(inputs), batch_size)]
    return model, batches


def measure_speeds(results: dict, passes: int) -> None:
    """Every run's prediction time: the fastest of ``passes`` passes over its validation set.

    The passes are interleaved (a pass of every model, then the next round), so a slower moment of
    the machine slows every model alike instead of whichever was measured then."""
    import torch

    runs = {name: prediction_batches(REPO / name[len("teacher:"):] if name.startswith("teacher:") else OUT / name)
            for name in results}
    best = dict.fromkeys(runs, float("inf"))
    with torch.inference_mode():
        for model, batches in runs.values():
            model(**batches[0])  # warm-up
        for _ in range(passes):
            for name, (model, batches) in runs.items():
                start = time.perf_counter()
                for batch in batches:
                    model(**batch)
                best[name] = min(best[name], time.perf_counter() - start)
    for name, seconds in best.items():
        results[name]["predict_s"] = seconds
        print(f"{name}: prediction {seconds:.2f} s", flush=True)


def speedup(teacher: dict, student: dict) -> str:
    if "predict_s" not in teacher or "predict_s" not in student:
        return "not measured"
    return f"{teacher['predict_s'] / student['predict_s']:.2f}x"


def render(results: dict) -> str:
    dropped = next((r["metrics"]["data"].get("unlabeled_dropped") for r in results.values()
                    if "unlabeled" in r["metrics"].get("data", {})), "none run yet")
    rows = ["| student | teacher | init | loss | layers × width | parameters | validation acc | "
            "test acc | retained (val) | prediction speed-up | train samples/s | wall |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        if name.startswith("teacher:"):
            continue
        m, t = r["metrics"], results.get(f"teacher:{r['teacher']}")
        if t is None:
            continue
        config = r["config"]
        init = m.get("init", {})
        how = "random" if init.get("weights") == "random" else (
            f"layers {init.get('layers')}" if "num_hidden_layers" in init.get("changed", {}) else "weight selection")
        loss = "CE" if m["transfer"]["alpha"] == 0 else "CE + KD" + (" + unlabelled MR" if "unlabeled" in m["data"] else "")
        val, tval = m["validation"]["accuracy"], t["metrics"]["validation"]["accuracy"]
        rows.append(
            f"| `{name}` | `{r['teacher']}` | {how} | {loss} | {config['num_hidden_layers']} × {config['hidden_size']} "
            f"| {m['params']['total'] / 1e6:.1f} M | {val:.4f} | {m['test']['accuracy']:.4f} | {100 * val / tval:.1f} % "
            f"| {speedup(t, r)} | {m['train']['samples_per_second']:.1f} | {r['wall_s'] / 60:.1f} min |")
    teachers = [f"`{name[8:]}`: {r['config']['num_hidden_layers']} × {r['config']['hidden_size']}, "
                f"{r['metrics']['params']['total'] / 1e6:.1f} M parameters, validation {r['metrics']['validation']['accuracy']:.4f}, "
                f"test {r['metrics']['test']['accuracy']:.4f}, prediction {r['predict_s']:.2f} s"
                for name, r in results.items() if name.startswith("teacher:")]
    return "\n".join(rows) + "\n\nTeachers: " + "; ".join(teachers) + (
        ".\n\nSST-2 students: train 6,920 / validation 872 / test 1,821 (the width-192 pair: 2,000 training "
        "labels), each from `recipes/sst2-distill.yaml` (lr 1e-4, 4 epochs, batch 32, best epoch on "
        "validation) with the change its name says; the transfer set is MR's 8,529 training sentences "
        "without labels, less those that are also SST-2 validation or test sentences (the kit leaves "
        f"them out: {dropped} of them; MR and SST-2 share their source reviews). *retained* = student / teacher validation accuracy. Prediction speed: the whole "
        "validation set in batches of 32 (length-sorted, the same batches for teacher and student), "
        "fastest of 5 passes, the passes of all models interleaved so that a busier moment slows all alike, 2 CPU cores. Digits: the 4-layer ViT of `recipes/digits-source.yaml` "
        "teaches 2-layer students on the same digits 0–4 (the source recipe's settings, 30 epochs). "
        "Model selection used validation only; test was read once per run.") + bars(results)


def bars(results: dict) -> str:
    """The issue's bars, read off the results: what holds and what does not."""
    val = {n: r["metrics"]["validation"]["accuracy"] for n, r in results.items() if not n.startswith("teacher:")}
    teacher = results.get("teacher:runs/sst2-full")
    three = {n: v for n, v in val.items() if results[n]["config"]["num_hidden_layers"] == 3}
    if not teacher or not three:
        return ""
    best = max(three, key=three.get)
    tval = teacher["metrics"]["validation"]["accuracy"]
    lines = [f"best 3-layer student `{best}`: {100 * three[best] / tval:.1f} % of the teacher's validation "
             f"accuracy (bar 96 %), prediction {speedup(teacher, results[best])} faster (bar 1.8x)"]
    for random in ("random-ce", "random-kd+mr"):
        if random in val:
            lines.append(f"`{random}` is {100 * (three[best] - val[random]):.1f} points below it (bar 10)")
    for suffix in ("", "-long"):
        a, b = f"width192-selected{suffix}", f"width192-random{suffix}"
        if a in val and b in val:
            lines.append(f"`{a}` beats `{b}` by {100 * (val[a] - val[b]):.1f} points (bar 10)")
    return "\n\nAgainst the bars (validation): " + "; ".join(lines) + "."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(RUNS))
    parser.add_argument("--speed", action="store_true", help="only measure the prediction speeds again")
    parser.add_argument("--render", action="store_true", help="only write the table again from the results")
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    store = OUT / "results.json"
    results = json.loads(store.read_text()) if store.exists() else {}
    names = [] if args.speed or args.render else [n.strip() for n in args.only.split(",") if n.strip()]
    for name in names:
        recipe, overrides, teacher = RUNS[name]
        ensure_teacher(teacher)
        if f"teacher:{teacher}" not in results:
            results[f"teacher:{teacher}"] = {
                "metrics": json.loads((REPO / teacher / "metrics.json").read_text()),
                "config": json.loads((REPO / teacher / "config.json").read_text())}
        run_dir = OUT / name
        wall = train(recipe, overrides, run_dir)
        results[name] = {"teacher": teacher, "wall_s": wall,
                         "metrics": json.loads((run_dir / "metrics.json").read_text()),
                         "config": json.loads((run_dir / "config.json").read_text())}
        store.write_text(json.dumps(results, indent=2))
        m = results[name]["metrics"]
        print(f"{name}: validation {m['validation']['accuracy']:.4f}, {wall / 60:.1f} min", flush=True)
    if not args.render:
        measure_speeds(results, args.passes)
        store.write_text(json.dumps(results, indent=2))
    update_section("Distillation and cross-architecture students", "python scripts/bench_distill.py",
                   render(results))


if __name__ == "__main__":
    main()
