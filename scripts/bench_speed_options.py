"""What each speed option does to `hftransfer train` on the throughput bench's run, kept or not.

The kit's command of scripts/bench_throughput.py (the first N SST-2 training sentences, the
embedded MiniLM, batch 32, one epoch, validation at the end), once per variant, each in its own
process: whole-process wall time, training samples/s and validation accuracy.

    python scripts/bench_speed_options.py [--n-train 3000] [--variants default,fp32,compile]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from _bench import sst2_train_subset, throughput_run, update_section  # noqa: E402

VARIANTS = {
    "default": ("the kit's default (bf16 autocast of training steps where the CPU has native bf16)", []),
    "fp32": ("fp32 throughout (`train.bf16=false`)", ["train.bf16=false"]),
    "compile": ("`train.torch_compile=true` (torch.compile, inductor), with the default precision",
                ["train.torch_compile=true"]),
    "eval128": ("evaluation batch 128 instead of 64 (`train.per_device_eval_batch_size=128`)",
                ["train.per_device_eval_batch_size=128"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=3000)
    parser.add_argument("--variants", default="default,fp32,compile")
    args = parser.parse_args()
    names = [v for v in args.variants.split(",") if v]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        subset = sst2_train_subset(Path(tmp), args.n_train)
        for name in names:
            what, extra = VARIANTS[name]
            command = [sys.executable, *throughput_run(subset, *extra), "--output-dir", f"{tmp}/{name}"]
            start = time.perf_counter()
            done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if done.returncode != 0:
                rows.append(f"| {what} | failed: {done.stderr.strip().splitlines()[-1][:200]} | | |")
                continue
            metrics = json.loads(Path(f"{tmp}/{name}/metrics.json").read_text())
            rows.append(f"| {what} | {wall:.1f} | {metrics['train']['samples_per_second']:.1f} | "
                        f"{metrics['validation']['accuracy']:.4f} |")
            print(rows[-1], flush=True)
    body = "\n".join(["| variant | whole-process wall s | train samples/s | validation accuracy |",
                      "|---|---|---|---|", *rows]) + (
        f"\n\n{args.n_train} SST-2 training sentences, batch 32, lr 5e-5, one epoch, embedded MiniLM, "
        f"{os.cpu_count()} cores, one process at a time.")
    update_section("Speed options of `hftransfer train`", f"python scripts/bench_speed_options.py --n-train "
                   f"{args.n_train} --variants {args.variants}", body)


if __name__ == "__main__":
    main()
