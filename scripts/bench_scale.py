"""The quickstart recipe in one process (with all cores, and with one torch thread), in two CPU
processes under `accelerate launch`, and killed with SIGKILL after its first checkpoint then
resumed with `--resume`; and the launcher's own start-up.

    python scripts/bench_scale.py

Writes the section "Scaling out and resuming (quickstart)" of BENCHMARKS.md. Whole-process wall
times; run it on a quiet machine (two torch processes share the cores).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from _bench import update_section  # noqa: E402

TRAIN = [sys.executable, "-m", "hftransfer", "train", "recipes/quickstart.yaml", "train.disable_tqdm=true"]
# No OMP_NUM_THREADS: one process takes every core, the processes of a launch share them (the kit's
# own thread setting, which is what is measured).
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch"]
ENV = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def timed(command: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, env=env or ENV, check=True, capture_output=True)
    return time.perf_counter() - start


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def main() -> None:
    out = Path(tempfile.mkdtemp(prefix="hftransfer-bench-scale-"))
    rows = []

    wall = timed(TRAIN + ["--output-dir", str(out / "one")])
    rows.append(("1 process", wall, metrics(out / "one")))
    wall = timed(TRAIN + ["--output-dir", str(out / "one-thread")], ENV | {"OMP_NUM_THREADS": "1"})
    rows.append(("1 process, one torch thread (`OMP_NUM_THREADS=1`)", wall, metrics(out / "one-thread")))

    launch = [*LAUNCH, "--config_file", "recipes/accelerate/cpu-2proc.yaml", "-m", "hftransfer", "train",
              "recipes/quickstart.yaml", "train.disable_tqdm=true", "--output-dir", str(out / "two")]
    wall = timed(launch)
    rows.append(("2 CPU processes (`cpu-2proc.yaml`)", wall, metrics(out / "two")))
    # What the launcher costs before any worker starts: it imports torch first.
    launcher = min(timed([*LAUNCH, "--help"]) for _ in range(3))

    # Kill -9 in the middle of epoch 2, after the epoch-1 checkpoint, then resume.
    killed = out / "killed"
    checkpoint = out / ".killed.partial" / "checkpoints"
    start = time.perf_counter()
    process = subprocess.Popen(TRAIN + ["--output-dir", str(killed)], cwd=REPO, env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not any(checkpoint.glob("checkpoint-*/trainer_state.json")):
        if process.poll() is not None:
            raise SystemExit("the run ended before it could be killed")
        time.sleep(0.1)
    time.sleep(2.0)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_after = time.perf_counter() - start
    leftover = not killed.exists() and not (out / ".killed.partial" / "metrics.json").exists()
    wall = timed(TRAIN + ["--output-dir", str(killed), "--resume"])
    rows.append((f"killed after {killed_after:.0f} s, then `--resume`", wall, metrics(killed)))

    lines = ["| run | whole-process wall s | processes × torch threads | optimizer steps | test accuracy | test loss |",
             "|---|---|---|---|---|---|"]
    for name, seconds, m in rows:
        lines.append(f"| {name} | {seconds:.1f} | {m['train']['world_size']} × {m['train'].get('threads', '?')} | {m['train']['steps']} "
                     f"| {m['test']['accuracy']:.4f} | {m['test']['loss']:.4f} |")
    trainable = rows[0][2]["params"]["trainable"]
    body = "\n".join(lines) + (
        f"\n\nThe killed run left no `metrics.json` before it was resumed: {'yes' if leftover else 'NO'}. "
        "The resumed row's wall time counts only the resumed process. Two processes on this "
        "2-core box split each global batch of 2 × 16 between them and one core each.\n\n"
        "Why two processes are not faster here: one process already runs its torch operations on both "
        f"cores, {rows[1][1] / rows[0][1]:.2f}x faster than on one (second row). Splitting the cores "
        "between two processes could at best save what the second thread leaves unused, and two "
        f"processes pay what one never does: `accelerate launch` takes {launcher:.1f} s to start before "
        "any worker does (`accelerate launch --help`, best of 3), and every optimizer step all-reduces "
        f"all {trainable:,} gradients (fp32, {trainable * 4 / 1e6:.0f} MB, over gloo) on cores that are "
        "busy computing. More processes pay off with more cores or GPUs than one process can use.\n\n"
        "GPU (single-GPU bf16 config): not run; this project's tasks so far had no GPU machine.")
    update_section("Scaling out and resuming (quickstart)", "python scripts/bench_scale.py", body)
    print(body)


if __name__ == "__main__":
    main()
