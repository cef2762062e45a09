"""Whole-process wall time: a plain run_glue-style Trainer script vs `hftransfer train`.

Same 3,000 SST-2 training sentences, same model (the embedded MiniLM), batch 32, lr 5e-5, one
epoch, evaluation on the SST-2 validation split, final model saved. The plain script draws random
batches with dynamic padding; the kit groups batches by length. Results go into BENCHMARKS.md.

    python scripts/bench_throughput.py [--n-train 3000] [--repeats 1]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from _bench import SST2, sst2_train_subset, throughput_run, update_section  # noqa: E402


def timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return wall, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        subset = sst2_train_subset(Path(tmp), args.n_train)
        for repeat in range(args.repeats):
            plain_wall, plain_out = timed([sys.executable, "scripts/plain_trainer_baseline.py", str(subset),
                                           str(SST2 / "validation.csv"), f"{tmp}/plain-{repeat}"])
            plain = json.loads(plain_out.strip().splitlines()[-1])
            kit_wall, _ = timed([sys.executable, *throughput_run(subset), "--output-dir", f"{tmp}/kit-{repeat}"])
            kit = json.loads(Path(f"{tmp}/kit-{repeat}/metrics.json").read_text())
            rows.append((plain_wall, plain["train_samples_per_second"], plain["validation_accuracy"],
                         kit_wall, kit["train"]["samples_per_second"], kit["validation"]["accuracy"]))
            print(f"repeat {repeat}: plain {plain_wall:.1f}s, kit {kit_wall:.1f}s, "
                  f"speed-up {plain_wall / kit_wall:.2f}x", flush=True)
    command = f"python scripts/bench_throughput.py --n-train {args.n_train} --repeats {args.repeats}"
    table = ["| program | whole-process wall s | train samples/s | validation accuracy |",
             "|---|---|---|---|"]
    for plain_wall, plain_sps, plain_acc, kit_wall, kit_sps, kit_acc in rows:
        table.append(f"| plain Trainer script (random batches, dynamic padding) | {plain_wall:.1f} | "
                     f"{plain_sps:.1f} | {plain_acc:.4f} |")
        table.append(f"| `hftransfer train` (length-grouped batches) | {kit_wall:.1f} | {kit_sps:.1f} | "
                     f"{kit_acc:.4f} |")
    speedups = [r[0] / r[3] for r in rows]
    body = "\n".join(table) + (
        f"\n\nWhole-process speed-up of the kit: **{min(speedups):.2f}x** (lowest of {len(rows)} repeat(s)). "
        f"{args.n_train} SST-2 training sentences, batch 32, lr 5e-5, 1 epoch, embedded MiniLM; the kit with "
        "its defaults (on a CPU with native bf16: bf16 autocast of the training steps, see the speed options "
        "below), the plain script in fp32, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores.")
    update_section("Throughput: plain Trainer script vs hftransfer", command, body)


if __name__ == "__main__":
    main()
