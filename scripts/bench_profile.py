"""Where the whole-process time of `hftransfer train` goes, on the throughput bench's run.

The kit's command of scripts/bench_throughput.py (the first N SST-2 training sentences, the
embedded MiniLM, batch 32, one epoch, validation at the end) runs under cProfile in its own
process; the profile is split into phases by the functions that do them. cProfile slows Python
code (imports, tokenising) more than torch's kernels, so the wall time without the profiler is
measured too and the phases are shown as shares of the profiled total.

    python scripts/bench_profile.py [--n-train 3000] [--save-strategy no|epoch] [--keep PROFILE]
"""
from __future__ import annotations

import argparse
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from _bench import sst2_train_subset, throughput_run, update_section  # noqa: E402

# (phase, [(file suffix, function name)]): the cumulative time of the outermost such calls.
PHASES = [
    ("start-up imports", [("<frozen importlib._bootstrap>", "_find_and_load")]),
    ("recipe, data reading, tokenizer", [("hftransfer/engine.py", "prepare")]),
    ("model load", [("hftransfer/strategies/finetune.py", "build_model"),
                    ("hftransfer/strategies/base.py", "build_model")]),
    ("tokenisation", [("hftransfer/tasks/base.py", "encode_splits")]),
    ("training steps (forward, backward, optimizer)", [("transformers/trainer.py", "_run_epoch")]),
    ("checkpoint writes", [("transformers/trainer.py", "_save_checkpoint")]),
    ("evaluation", [("transformers/trainer.py", "evaluate")]),
    ("final save (model, tokenizer, logs)", [("hftransfer/engine.py", "_write_run")]),
    ("model card", [("hftransfer/cards.py", "write_cards")]),
]


def cumulative(stats: pstats.Stats, file_suffix: str, name: str) -> float:
    return sum(entry[3] for (filename, _, function), entry in stats.stats.items()
               if function == name and filename.endswith(file_suffix))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=3000)
    parser.add_argument("--save-strategy", default="no", help="train.save_strategy of the run (epoch: one checkpoint)")
    parser.add_argument("--keep", help="also keep the cProfile file here")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory() as tmp:
        subset = sst2_train_subset(Path(tmp), args.n_train)
        kit = throughput_run(subset, f"train.save_strategy={args.save_strategy}")
        start = time.perf_counter()
        subprocess.run([sys.executable, *kit, "--output-dir", f"{tmp}/plain"], cwd=REPO, env=env, check=True,
                       capture_output=True)
        wall = time.perf_counter() - start
        profile = Path(args.keep) if args.keep else Path(tmp) / "train.prof"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cProfile", "-o", str(profile), *kit, "--output-dir", f"{tmp}/profiled"],
                       cwd=REPO, env=env, check=True, capture_output=True)
        profiled_wall = time.perf_counter() - start
        stats = pstats.Stats(str(profile))
    total = stats.total_tt
    rows, accounted = [], 0.0
    for phase, functions in PHASES:
        seconds = sum(cumulative(stats, suffix, name) for suffix, name in functions)
        if phase == "training steps (forward, backward, optimizer)":
            # An epoch's loop holds its evaluations and checkpoints too: those have rows of their own.
            seconds -= cumulative(stats, "transformers/trainer.py", "_maybe_log_save_evaluate")
        if phase == "final save (model, tokenizer, logs)":
            seconds -= cumulative(stats, "hftransfer/cards.py", "write_cards")
        rows.append((phase, seconds))
        accounted += seconds
    rows.append(("everything else (Python start, set-up, metrics, the rest of the Trainer)", total - accounted))
    table = ["| phase | profiled s | share |", "|---|---|---|"]
    table += [f"| {phase} | {seconds:.1f} | {100 * seconds / total:.0f} % |" for phase, seconds in rows]
    table.append(f"| **whole process (profiled)** | **{total:.1f}** | 100 % |")
    body = "\n".join(table) + (
        f"\n\nThe same run without the profiler: **{wall:.1f} s** whole process (with it: {profiled_wall:.1f} s). "
        f"{args.n_train} SST-2 training sentences, batch 32, one epoch, `train.save_strategy={args.save_strategy}`, "
        f"validation (872 sentences) at the end, {os.cpu_count()} cores. Phases are cumulative times of the "
        "functions that do them (imports: every `import`, wherever it happens).")
    print(body)
    update_section("Where the time of `hftransfer train` goes", f"python scripts/bench_profile.py --n-train {args.n_train} "
                   f"--save-strategy {args.save_strategy}", body)


if __name__ == "__main__":
    main()
