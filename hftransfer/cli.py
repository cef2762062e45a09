"""The ``hftransfer`` command line. User mistakes print one ``error:`` line and exit 2."""
from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from . import __version__, cache
from .errors import HFTransferError
from .recipe.shipped import RECIPES, find, recipe_text, shipped_recipes, write_recipe
from .registry import load
from .rundir import ENSEMBLE, disk_error, require_kit_run


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as for every other user error
        sys.stderr.write(f"error: {message} (see `{self.prog} --help`)\n")
        sys.exit(2)


def _api() -> Any:
    # The deep-learning stack loads only when a command needs it: `--help` and argument errors
    # stay instant. Its ~400k objects live as long as the command: main() keeps the garbage
    # collector off while they load (its full passes over them cost about a second in all), and
    # they are then frozen out of its passes (accelerate runs one as training starts).
    api = load("hftransfer.api")
    if not gc.isenabled():  # the first load in this command
        gc.freeze()
        gc.enable()
    return api


def _train(args: argparse.Namespace) -> int:
    result = _api().train(args.recipe, args.overrides, output_dir=args.output_dir,
                          overwrite=args.overwrite, resume=args.resume,
                          keep_checkpoints=args.keep_checkpoints)
    if result.metrics is not None and result.main_process:  # other processes of a launch: quiet
        summary = {s: result.metrics[s] for s in ("validation", "test", "forgetting") if s in result.metrics}
        print(f"run saved to {result.run_dir}")
        print(json.dumps(summary, indent=2))
    return 0


def _validate(args: argparse.Namespace) -> int:
    # What `train` checks before it loads weights: recipe, source model config, data, processor.
    setup = _api().check(args.recipe, args.overrides)
    if isinstance(setup, tuple):  # a staged recipe: the pipeline and each stage's setup
        staged, stages = setup
        shown = ", ".join(f"{n} ({s.recipe.task_type}, strategy {s.recipe.strategy_name})"
                          for n, s in zip(staged.stage_names, stages))
        print(f"ok: {args.recipe} (a pipeline of {len(stages)} stages: {shown})")
        return 0
    recipe = setup.recipe
    what = recipe.task_type
    if recipe.is_multitask:
        what = "tasks " + ", ".join(f"{n}={e.task_type}" for n, e in recipe.members.items())
    print(f"ok: {args.recipe} ({what}, strategy {recipe.strategy_name})")
    if setup.args.fsdp:
        print("note: train.fsdp shards the model over several processes: run it with accelerate "
              "launch --num_processes N (recipes/accelerate/fsdp.yaml)")
    return 0


def _compare(args: argparse.Namespace) -> int:
    result = _api().compare(args.recipe, strategies=args.strategies, sources=args.sources,
                            budgets=args.label_budgets, seeds=args.seeds, scratch=not args.no_scratch,
                            min_steps=args.min_steps, overrides=args.overrides, output_dir=args.output_dir,
                            backend=args.backend, address=args.address, cpus_per_cell=args.cpus_per_cell)
    cells = result.results["cells"]
    print(f"comparison in {result.directory}: {len(cells)} cells ({result.trained} trained now)")
    for path in result.report:
        print(f"  {path}")
    return 0


def _rank(args: argparse.Namespace) -> int:
    result = _api().rank(args.recipe, args.candidates, pooling=args.pooling, folds=args.folds,
                         compare_dir=args.compare, output_dir=args.output_dir, overrides=args.overrides)
    ranking = result.ranking
    print(f"{ranking['examples']} training examples of {args.recipe}, best first:")
    print(f"  {'candidate':28s} {'LogME':>8s} {'probe acc':>10s} {'LEEP':>8s} {'seconds':>8s}")
    for row in ranking["candidates"]:
        leep = "–" if row["leep"] is None else f"{row['leep']:.4f}"
        print(f"  {row['name'][:28]:28s} {row['logme']:8.4f} {row['probe_accuracy']:10.4f} {leep:>8s} "
              f"{row['seconds']:8.1f}")
    rec = ranking["recommendation"]
    print(f"recommended: {rec['best']} ({rec['confidence']}: LogME gap to the next {rec['gap']:.4f}, "
          f"spread {rec['spread']:.4f})")
    tuned = ranking.get("fine_tuned")
    if tuned and tuned.get("kendall_tau"):
        taus = ", ".join(f"{k} {v:+.2f}" for k, v in tuned["kendall_tau"].items())
        print(f"against the fine-tuned {tuned['metric']} ({tuned['budget']} per label) of {args.compare}: "
              f"Kendall's tau {taus}")
    print(f"saved to {result.path}")
    return 0


def _report(args: argparse.Namespace) -> int:
    for path in _api().report(args.directory):
        print(path)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    print(json.dumps(_api().evaluate(args.run_dir, split=args.split, data=args.data, task=args.task), indent=2))
    return 0


def _predict(args: argparse.Namespace) -> int:
    done = _api().predictions(args.run_dir, list(args.texts), args.task, file=args.file, column=args.column,
                              batch_size=args.batch_size, top_k=args.top_k, output=args.output)
    if args.json:
        print(json.dumps(done.results, ensure_ascii=False))
    elif args.output:
        print(f"{len(done.results)} predictions written to {args.output}")
    else:
        for text, result in zip(done.inputs, done.results):
            shown = text if isinstance(text, str) else " ||| ".join(text)
            print(done.task.format_prediction(shown, result))
    return 0


def _ensemble(args: argparse.Namespace) -> int:
    metrics = _api().ensemble(args.runs, args.output_dir, combine=args.combine, overwrite=args.overwrite)
    print(f"ensemble saved to {args.output_dir}")
    print(json.dumps({"members": [{k: m[k] for k in ("run", "temperature", "weight")}
                                  for m in metrics["ensemble"]["members"]],
                      **{s: metrics[s] for s in ("validation", "test") if s in metrics}}, indent=2))
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    result = _api().calibrate(args.run_dir, args.output_dir, overwrite=args.overwrite)
    section = result.metrics["calibration"]
    summary = {"temperature": section["temperature"], "layer": section["layer"],
               **{s: section[s] for s in ("validation", "test") if s in section}}
    print(f"calibrated run saved to {result.run_dir}")
    print(json.dumps(summary, indent=2))
    return 0


def _recipe(args: argparse.Namespace) -> int:
    recipe = find(args.name)
    if args.to is None:
        sys.stdout.write(recipe_text(recipe))
        return 0
    written = write_recipe(recipe, Path(args.to), overwrite=args.overwrite)
    command = ("accelerate launch --config_file {} -m hftransfer train RECIPE" if recipe.is_accelerate_config
               else "hftransfer validate {} && hftransfer train {}")
    print(f"wrote {written}; next: {command.format(written, written)}")
    return 0


def _ls(args: argparse.Namespace) -> int:
    api = _api()
    print("strategies:")
    for name, cls in api.strategies().items():
        defaults = ", ".join(f"{k}={v}" for k, v in cls.defaults.items())
        print(f"  {name:20s} {plain_text(cls.description)}")
        print(f"  {'':20s} defaults: {defaults}")
    print("tasks:")
    for name, cls in api.tasks().items():
        print(f"  {name:20s} {plain_text((cls.__doc__ or '').strip().splitlines()[0])}")
    shipped = shipped_recipes()
    print("recipes (`hftransfer recipe NAME --to FILE` writes one out to edit; then `hftransfer train FILE`):")
    for recipe in (r for r in shipped if not r.is_accelerate_config):
        print(f"  {recipe.name:28s} {recipe.summary}")
    print("accelerate configs (`accelerate launch --config_file FILE -m hftransfer train RECIPE`):")
    for recipe in (r for r in shipped if r.is_accelerate_config):
        print(f"  {recipe.name:28s} {recipe.summary}")
    # Recipes of the user's own in ./recipes (in a checkout that folder is the shipped one).
    local = Path("recipes")
    if local.is_dir() and local.resolve() != RECIPES:
        own = sorted(p for p in local.glob("**/*.yaml") if p.is_file())
        print("recipes in ./recipes:" + ("" if own else " (none)"))
        for path in own:
            try:
                first = path.read_text(encoding="utf-8", errors="replace").splitlines()[:1]
            except OSError:
                first = []
            print(f"  {str(path):40s} {first[0].lstrip('# ') if first else ''}")
    return 0


_REST_ROLE = re.compile(r":[\w:.-]+:`(~?)([^`]*)`")
_REST_LITERAL = re.compile(r"``([^`]*)``|`([^`]*)`")


def plain_text(text: str) -> str:
    """A docstring line as a terminal shows it: reST markup (``literal``, :role:`target`,
    `interpreted`) reduced to its words."""
    # :func:`~a.b.c` shows as c, :func:`a.b.c` as a.b.c (what Sphinx renders).
    text = _REST_ROLE.sub(lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2), text)
    return _REST_LITERAL.sub(lambda m: m.group(1) if m.group(1) is not None else m.group(2), text)


def _card(args: argparse.Namespace) -> int:
    # Rendered from the run's files alone (recipe, metrics, recorded training arguments), and
    # written only into a run the kit made.
    require_kit_run(Path(args.run_dir))
    if (Path(args.run_dir) / ENSEMBLE).is_file():
        raise HFTransferError(f"{args.run_dir!r} is an ensemble; its card is written when it is built "
                              "(build it again to refresh it)")
    for path in _api().write_cards(Path(args.run_dir)):
        print(path)
    return 0


def _push(args: argparse.Namespace) -> int:
    if not args.verbose:  # the HTTP client logs every request at INFO
        for name in ("httpx", "httpx2", "huggingface_hub"):
            logging.getLogger(name).setLevel(logging.WARNING)
    result = _api().push(args.run_dir, args.repo_id, private=args.private, revision=args.revision,
                         merge_adapter=args.merge_adapter, dry_run=args.dry_run, task=args.task)
    if result.dry_run is not None:
        print(f"dry run: staged {len(result.files)} files for {result.repo_id} in {result.dry_run} "
              "(nothing uploaded)")
    else:
        print(f"pushed {len(result.files)} files to {result.repo_url}")
    for name in result.files:
        print(f"  {name}  ({_size(result.sizes[name])})")
    if result.commit_url:
        print(f"commit: {result.commit_url}")
    for note in result.notes:
        print(f"note: {note}")
    return 0


def _fused(result: Any) -> int:
    """What a weight-space fusion chose, then the saved model's metrics as JSON."""
    metrics = result.metrics
    wise, soup = metrics.get("interpolation"), metrics.get("soup")
    print(f"run saved to {result.run_dir}")
    if wise:
        print("alpha  validation accuracy  nll")
        for row in wise["alphas"]:
            mark = "  <- chosen" if row["alpha"] == wise["chosen_alpha"] else ""
            print(f"{row['alpha']:5.2f}  {row['validation']['accuracy']:19.4f}  {row['validation']['nll']:.4f}{mark}")
    if soup:
        print("validation accuracy of each run:")
        for row in soup["members"]:
            print(f"  {row['validation_accuracy']:.4f}  {row['run']}")
        for kind in ("uniform", "greedy"):
            entry = soup[kind]
            print(f"{kind} soup ({len(entry['used'])} runs): validation accuracy "
                  f"{entry['validation']['accuracy']:.4f}{'  <- saved' if kind == soup['kind'] else ''}")
    print(json.dumps({s: metrics[s] for s in ("validation", "test") if s in metrics}, indent=2))
    return 0


def _interpolate(args: argparse.Namespace) -> int:
    # The α arguments are checked (as text) before any model loads.
    result = _api().interpolate(args.run_dir, args.start, output_dir=args.output_dir, alphas=args.alphas,
                                alpha=args.alpha, overwrite=args.overwrite)
    return _fused(result)


def _soup(args: argparse.Namespace) -> int:
    result = _api().soup(args.run_dirs, output_dir=args.output_dir, kind=args.kind, overwrite=args.overwrite)
    return _fused(result)


def _cache(args: argparse.Namespace) -> int:
    if args.action == "clear":
        removed, size = cache.clear(tuple(args.kind) if args.kind else cache.KINDS)
        print(f"removed {removed} entries ({_size(size)}) from {cache.cache_root()}")
        return 0
    print(f"cache: {cache.cache_root()} (HFTRANSFER_CACHE moves it)")
    for kind, (count, size) in cache.usage().items():
        print(f"  {kind:10s} {count:6d} entries  {_size(size)}")
    return 0


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hftransfer", description=(
        "Transfer a pretrained Hugging Face model to your task with one recipe."))
    parser.add_argument("--version", action="version", version=f"hftransfer {__version__}")
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("-v", "--verbose", action="store_true", help="show library logs")
    noise.add_argument("-q", "--quiet", action="store_true",
                       help="no progress bars or progress lines: warnings, errors and results only")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train a recipe into a run directory")
    p.add_argument("recipe", help="YAML recipe file")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. strategy.name=lora")
    p.add_argument("--output-dir", help="run directory (default: runs/<recipe name>)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep RUN/checkpoints (optimizer state and a second copy of the model) in the "
                   "finished run; by default they go once the run finishes")
    p.set_defaults(func=_train)

    p = sub.add_parser("validate", help="check a recipe without training")
    p.add_argument("recipe", help="YAML recipe file")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. strategy.name=lora")
    p.set_defaults(func=_validate)

    p = sub.add_parser(
        "compare", help="train strategies (or sources) x label budgets x seeds and report what each bought",
        description="Train a grid of cells, each a run directory in the comparison's directory: every "
        "strategy (or source model) at every label budget with every seed, the scratch baseline among "
        "them. Every cell of one budget and seed sees the same data (the same N examples of each label, "
        "the same validation split); model selection uses validation only, and test is read once per "
        "cell. A rerun trains only the cells that are not finished. Writes results.json, results.csv, "
        "report.md and report.html.")
    p.add_argument("recipe", help="YAML recipe file (its task, data, model and training settings)")
    p.add_argument("overrides", nargs="*",
                   help="key.path=value for every cell; ARM:key.path=value for one arm (e.g. "
                   "lora:train.learning_rate=2e-3)")
    p.add_argument("--strategies", help="comma-separated strategies (default: the recipe's)")
    p.add_argument("--sources", help="comma-separated source models (Hub ids, directories, run "
                   "directories, embedded), or a YAML file of NAME: <model section>, to transfer from "
                   "(default: the recipe's model)")
    p.add_argument("--label-budgets", default="all",
                   help="comma-separated training examples per label, and/or all (default all)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per cell (default 3: 0, 1, 2)")
    p.add_argument("--no-scratch", action="store_true", help="leave out the scratch baseline")
    p.add_argument("--min-steps", type=int, default=50,
                   help="train every cell at least this many optimizer steps (small budgets repeat "
                   "their examples; default 50, 0 = the recipe's epochs as they are)")
    p.add_argument("--output-dir", help="the comparison's directory (default runs/<recipe name>-compare)")
    p.add_argument("--backend", default="local", choices=["local", "ray"],
                   help="run cells one after another here (default), or as tasks on Ray")
    p.add_argument("--address", help="--backend ray: the cluster's address (default: start a local one)")
    p.add_argument("--cpus-per-cell", type=int, default=1, help="--backend ray: cores per cell (default 1)")
    p.set_defaults(func=_compare)

    p = sub.add_parser(
        "rank", help="rank candidate source models for a recipe before training (LogME, probe, LEEP)",
        description="Score each candidate source model on the recipe's training data from frozen "
        "features (those feature-extraction trains on, through the feature cache): LogME, a "
        "cross-validated logistic-regression probe, and LEEP for a run directory with a head of its "
        "own. Prints the ranking and writes rank.json.")
    p.add_argument("recipe", help="YAML recipe file (its task and data; the model is each candidate)")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides of the recipe")
    p.add_argument("--candidates", required=True,
                   help="comma-separated models (Hub ids, directories, run directories, embedded), or "
                   "a YAML file of NAME: <model section>")
    p.add_argument("--pooling", choices=["cls", "mean"],
                   help="text: pool every candidate's tokens this way (default: the recipe's own "
                   "feature-extraction pooling; cls, what a fine-tuned classification head reads, "
                   "for any other strategy)")
    p.add_argument("--folds", type=int, default=5, help="folds of the cross-validated probe (default 5)")
    p.add_argument("--compare", metavar="DIR",
                   help="a comparison of the same candidates (compare --sources): Kendall's tau against "
                   "its fine-tuned order, shown in its report too")
    p.add_argument("--output-dir", help="where rank.json goes (default runs/<recipe name>-rank)")
    p.set_defaults(func=_rank)

    p = sub.add_parser("report", help="render a comparison's report again from its results.json")
    p.add_argument("directory", help="a comparison directory (hftransfer compare --output-dir)")
    p.set_defaults(func=_report)

    p = sub.add_parser("evaluate", help="metrics of a run on a split or a data file")
    p.add_argument("run_dir", help="a finished run directory (or an ensemble)")
    p.add_argument("--split", default="test", help="train, validation or test (default test)")
    p.add_argument("--data", help="a data file with the recipe's columns, instead of a split")
    p.add_argument("--task", help="multi-task runs: evaluate this task only (default: all)")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("predict", help="predict labels with a run")
    p.add_argument("run_dir", help="a finished run directory (or an ensemble)")
    p.add_argument("texts", nargs="*",
                   help="texts (pair tasks: 'text<TAB>pair'), or image/audio file paths")
    p.add_argument("--file", help="more inputs: a .txt file (one per line; - reads stdin) or a "
                   "csv/tsv/jsonl/json/parquet file (its --column)")
    p.add_argument("--column", help="the input column of a --file data file (default: the recipe's; "
                   "pair tasks: TEXT,PAIR)")
    p.add_argument("--batch-size", type=int, default=32, help="inputs per forward pass (default 32)")
    p.add_argument("--top-k", metavar="K", help="classification: also list the K best labels' scores "
                   '("scores"); 0 or all: every label')
    p.add_argument("--output", metavar="PATH", help="also write one row per input with its prediction "
                   "to PATH (.jsonl or .csv)")
    p.add_argument("--json", action="store_true", help='print a JSON list of {"label", "score"}')
    p.add_argument("--task", help="multi-task runs: the task (head, adapter) to predict with")
    p.set_defaults(func=_predict)

    p = sub.add_parser("card", help="re-render a run's model card (README.md)")
    p.add_argument("run_dir", help="a finished run directory made by hftransfer")
    p.set_defaults(func=_card)

    p = sub.add_parser("push", help="upload a finished run to the Hugging Face Hub",
                       description="Upload the publishable part of a run (model or adapter, "
                       "tokenizer, card, recipe.yaml, metrics.json; never checkpoints, logs or "
                       "pickle files). The token comes from HF_TOKEN or `hf auth login`.")
    p.add_argument("run_dir", help="a finished run directory to upload")
    p.add_argument("--repo-id", required=True, help="namespace/name (or name) of the Hub repo")
    p.add_argument("--private", action="store_true", help="create the repo private (if it is new)")
    p.add_argument("--revision", help="branch to commit to (created if missing; default main)")
    p.add_argument("--merge-adapter", action="store_true",
                   help="merge a PEFT adapter into its base and upload a plain transformers model")
    p.add_argument("--dry-run", metavar="DIR",
                   help="copy what would be uploaded into DIR (new or empty) and upload nothing")
    p.add_argument("--task", help="multi-task runs: the task whose model (tasks/TASK) to upload")
    p.set_defaults(func=_push)

    p = sub.add_parser("ensemble", help="combine finished runs of one label set into an ensemble",
                       description="Fit an ensemble of finished runs on their validation split: a "
                       "temperature per member, then member weights, on validation NLL. Members may "
                       "differ in architecture and processor. The ensemble run directory refers to "
                       "its members (evaluate and predict take it).")
    p.add_argument("runs", nargs="+", help="finished run directories (two or more, one label set); the first one's data is the ensemble's")
    p.add_argument("--output-dir", required=True, help="the ensemble's run directory (new)")
    p.add_argument("--combine", default="probs", choices=["probs", "logits"],
                   help="average calibrated probabilities (default) or add calibrated logits")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.set_defaults(func=_ensemble)

    p = sub.add_parser("calibrate", help="fold a temperature fitted on validation data into a run's classifier",
                       description="Fit a temperature T on the run's validation NLL and divide the "
                       "classifier's final layer (weight and bias) by it: a new run whose model, "
                       "loaded by plain transformers or peft, gives calibrated probabilities with the "
                       "same predicted labels. Writes metrics before/after (accuracy, NLL, ECE) and "
                       "reliability.png; the input run is never modified.")
    p.add_argument("run_dir", help="a finished single-task run of a classification task")
    p.add_argument("--output-dir", required=True, help="the new, calibrated run directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.set_defaults(func=_calibrate)

    p = sub.add_parser(
        "interpolate", help="WiSE-FT: a fine-tuned run interpolated with a probe of its source, α chosen on validation",
        description="Interpolate in weight space between START (α = 0: a probe of the same source, "
        "e.g. a partial-freeze run that freezes every encoder layer) and the fine-tuned RUN_DIR (α = 1): "
        "θ = (1 − α)·θ_start + α·θ_run. Every α of the grid is scored on validation; the most accurate "
        "(ties: the larger α) is saved as a plain transformers model in a new run directory. An adapter "
        "run is merged into its base first; without --start its α = 0 end is the base with the run's "
        "head, so α scales the adapter.")
    p.add_argument("run_dir", help="the fine-tuned run (α = 1)")
    p.add_argument("--start", metavar="START_RUN",
                   help="the α = 0 run: a linear probe of the same source and labels (optional for adapter runs)")
    p.add_argument("--output-dir", required=True, help="the new run directory")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--alphas", help="comma-separated α grid in [0, 1] (default 0,0.1,...,1)")
    group.add_argument("--alpha", help="one α in [0, 1] instead of a grid")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.set_defaults(func=_interpolate)

    p = sub.add_parser(
        "soup", help="a model soup: the weight average of runs fine-tuned from one source",
        description="Average the weights of runs fine-tuned from the same source (same architecture and "
        "labels; adapter runs are merged first). The greedy soup starts from the run with the best "
        "validation accuracy and adds the next best only if validation accuracy does not drop; the "
        "uniform soup averages them all. Both are scored; the chosen kind is saved as a plain "
        "transformers model in a new run directory.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="two or more finished runs")
    p.add_argument("--output-dir", required=True, help="the new run directory")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--greedy", dest="kind", action="store_const", const="greedy",
                       help="save the greedy soup (default)")
    group.add_argument("--uniform", dest="kind", action="store_const", const="uniform",
                       help="save the uniform soup")
    p.set_defaults(kind="greedy")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.set_defaults(func=_soup)

    p = sub.add_parser("cache", help="what the kit's cache holds (features, teacher outputs, merged adapters), or clear it")
    p.add_argument("action", choices=["ls", "clear"], help="ls: entries and sizes per kind; clear: remove them")
    p.add_argument("--kind", action="append", choices=["features", "teacher", "merged"],
                   help="clear only this kind (repeatable; default all)")
    p.set_defaults(func=_cache)

    p = sub.add_parser("ls", help="list strategies, tasks and shipped recipes")
    p.set_defaults(func=_ls)

    p = sub.add_parser("recipe", help="print a shipped recipe, or write it to a file to edit (--to)")
    p.add_argument("name", help="a shipped recipe's name as `hftransfer ls` lists it (quickstart, sst2-lora, ...)")
    p.add_argument("--to", metavar="PATH", help="write it here (a file, or a folder for NAME.yaml) instead of printing it")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file at --to")
    p.set_defaults(func=_recipe)
    return parser


def _quiet_libraries(verbose: bool, quiet: bool = False) -> None:
    logging.basicConfig(format="%(message)s", level=logging.INFO)
    # --quiet: the kit's INFO lines and its progress (bars and lines) off; warnings stay.
    logging.getLogger("hftransfer").setLevel(logging.WARNING if quiet else logging.INFO)
    if not verbose:
        import warnings

        import transformers

        # Deprecation chatter from pyarrow/torch internals is for library authors, not users.
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import datasets

        datasets.logging.set_verbosity_error()
        datasets.disable_progress_bars()  # "Tokenizing" bars for data sets read in a blink


MAX_ERROR = 2000
"""Characters of an error line, at most: a message quoting a huge value stays readable."""


def _one_line(message: str) -> str:
    message = " ".join(message.split())
    if len(message) > MAX_ERROR:
        message = f"{message[:MAX_ERROR - 500]} [...] {message[-480:]}"
    return message


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hftransfer`` console script and ``python -m hftransfer``."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Positionals after an option (`predict RUN --json "text"`, `train R --overwrite k=v`) are
    # left over by argparse; they belong to the command's trailing list.
    trailing = {"predict": "texts", "train": "overrides", "validate": "overrides", "compare": "overrides", "rank": "overrides"}.get(args.command)
    if extra:
        if trailing is None or any(e.startswith("-") and e != "-" for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        getattr(args, trailing).extend(extra)
    collecting = gc.isenabled()
    gc.disable()  # until the libraries are loaded: see _api
    try:
        _quiet_libraries(args.verbose, args.quiet)
        return args.func(args)
    except HFTransferError as exc:
        sys.stderr.write(f"error: {_one_line(str(exc))}\n")
        return 2
    except OSError as exc:  # a disk that refused a write (full, read-only) is not a bug
        error = disk_error(exc, Path(exc.filename or ".").parent)
        if error is None:
            raise
        sys.stderr.write(f"error: {_one_line(str(error))}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    finally:
        if argv is not None:  # an in-process caller (tests, a notebook) gets its collector back
            gc.unfreeze()
        # The program itself (no argv) ends next: unfrozen, the libraries' objects would all be
        # collected on the way out (1.7 s of a 6 s warm feature-extraction run).
        (gc.enable if collecting else gc.disable)()


if __name__ == "__main__":
    sys.exit(main())
