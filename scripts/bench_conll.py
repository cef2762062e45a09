"""CoNLL-2003 NER with the shipped recipes: entity-level F1 on validation and test, wall time.

    python scripts/bench_conll.py                       # conll2003-full and conll2003-lora
    python scripts/bench_conll.py --recipes conll2003-full

Each recipe runs as `hftransfer train recipes/NAME.yaml` in its own process (whole-process wall
time); the table goes to the section "CoNLL-2003 NER" of BENCHMARKS.md. Run it on a quiet machine.
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
sys.path.insert(0, str(Path(__file__).parent))
from _bench import update_section  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipes", nargs="+", default=["conll2003-full", "conll2003-lora"])
    parser.add_argument("--out", default="runs/bench-conll")
    args = parser.parse_args()
    # Results accumulate in results.json, so recipes can be (re)run one at a time.
    results_path = REPO / args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for name in args.recipes:
        run_dir = Path(args.out) / name
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "hftransfer", "train", f"recipes/{name}.yaml",
                        "train.disable_tqdm=true", "--output-dir", str(run_dir), "--overwrite"],
                       cwd=REPO, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        wall = time.perf_counter() - start
        results[name] = {"wall_s": wall, "metrics": json.loads((REPO / run_dir / "metrics.json").read_text())}
        results_path.write_text(json.dumps(results, indent=2))
    rows = [(name, r["wall_s"], r["metrics"]) for name, r in sorted(results.items())]

    lines = ["| recipe | validation F1 | test F1 | test P / R | test F1 per type | trainable params | wall (whole process) |",
             "|---|---|---|---|---|---|---|"]
    for name, wall, m in rows:
        test = m["test"]
        per_type = ", ".join(f"{k[3:]} {v:.3f}" for k, v in sorted(test.items()) if k.startswith("f1_"))
        p = m["params"]
        lines.append(f"| `{name}` | {m['validation']['f1']:.4f} | {test['f1']:.4f} | "
                     f"{test['precision']:.3f} / {test['recall']:.3f} | {per_type} | "
                     f"{p['trainable']:,} ({100 * p['trainable'] / p['total']:.2f} %) | {wall / 60:.1f} min |")
    body = "\n".join(lines) + (
        "\n\nCoNLL-2003 English from `../shared/data/conll2003` (train 14,041 / validation 3,250 / "
        "test 3,453 sentences), the embedded MiniLM (uncased, so capitalisation — a strong cue for "
        "names — is lost), each recipe as shipped. Entity-level micro F1 with seqeval's default "
        "(conlleval) semantics; the best epoch was chosen on validation F1 and test was read once.")
    update_section("CoNLL-2003 NER", "python scripts/bench_conll.py", body)
    print(body)


if __name__ == "__main__":
    main()
