"""Multi-task transfer: recipes with tasks:, the task-mixing sampler, one shared encoder with a
head per task (or an adapter per task), per-task metrics, predict/evaluate --task, the standalone
tasks/NAME exports loading in plain transformers / peft, and the bad inputs."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_cli_error, run_cli, run_without_the_kit, user_error
from test_image import image_data, stripes_data, tiny_vit_dir  # noqa: F401  (fixtures)
from test_token import toy_sentences, write_conll

from hftransfer import evaluate, predict, train
from hftransfer.mixing import TaskBatchSampler
from hftransfer.recipe import load_recipe


@pytest.fixture(scope="module")
def mt_data(tmp_path_factory, toy_data) -> Path:
    """Sentiment csv files (the toy data) and NER CoNLL files side by side."""
    out = tmp_path_factory.mktemp("multitask")
    for split in ("train", "validation", "test"):
        (out / f"{split}.csv").write_bytes((toy_data / f"{split}.csv").read_bytes())
    write_conll(out / "train.txt", toy_sentences(96, 0))
    write_conll(out / "validation.txt", toy_sentences(24, 1))
    write_conll(out / "test.txt", toy_sentences(24, 2))
    return out


def mt_recipe(model_dir, data: Path, **strategy) -> dict:
    return {
        "name": "tiny-multitask",
        "model": {"name_or_path": str(model_dir)},
        "tasks": {
            "sentiment": {"task": {"type": "text-classification"},
                          "data": {s: str(data / f"{s}.csv") for s in ("train", "validation", "test")}},
            "ner": {"task": {"type": "token-classification"},
                    "data": {s: str(data / f"{s}.txt") for s in ("train", "validation", "test")}},
        },
        "strategy": {"name": "multitask", **strategy},
        "train": {"num_train_epochs": 3, "per_device_train_batch_size": 8, "learning_rate": 1e-3,
                  "save_strategy": "no", "disable_tqdm": True},
    }


# --------------------------------------------------------------------------- the sampler


def _epoch(sampler: TaskBatchSampler, epoch: int = 0) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_batches_are_single_task_and_proportional_visits_every_example_once():
    sampler = TaskBatchSampler([50, 20], batch_size=10, probabilities=None, round_robin=False, seed=0)
    batches = _epoch(sampler)
    assert len(batches) == len(sampler) == 7
    assert all(len({i >= 50 for i in b}) == 1 for b in batches)  # one task per batch
    seen = Counter(i for b in batches for i in b)
    assert sorted(seen) == list(range(70)) and set(seen.values()) == {1}
    assert _epoch(sampler, 0) == batches  # deterministic per (seed, epoch)
    assert _epoch(sampler, 1) != batches  # reshuffled the next epoch


def test_temperature_round_robin_and_process_groups():
    sizes = [900, 100]
    p = [n ** 0.5 for n in sizes]
    p = [x / sum(p) for x in p]
    sampler = TaskBatchSampler(sizes, 10, p, round_robin=False, seed=0)
    share = np.mean([b[0] >= 900 for b in _epoch(sampler)] + [b[0] >= 900 for b in _epoch(sampler, 1)])
    assert abs(share - p[1]) < 0.08  # the small task gets ~25% of the steps, not 10%

    rr = TaskBatchSampler([30, 30, 30], 10, None, round_robin=True, seed=0)
    assert [0 if b[0] < 30 else 1 if b[0] < 60 else 2 for b in _epoch(rr)] == [0, 1, 2] * 3

    # Two processes: batches come in same-task pairs (process 0 takes even, process 1 odd ones).
    ddp = TaskBatchSampler([40, 24], 4, None, round_robin=False, seed=0, world_size=2)
    batches = _epoch(ddp)
    assert len(batches) == len(ddp) == 2 * (5 + 3)
    assert all((a[0] >= 40) == (b[0] >= 40) for a, b in zip(batches[::2], batches[1::2]))


# --------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def full_run(tiny_model_dir, mt_data, tmp_path_factory):
    recipe = mt_recipe(tiny_model_dir, mt_data, sampling="temperature", loss_weights={"ner": 1.0, "sentiment": 0.5})
    recipe["train"].update(eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
                           metric_for_best_model="combined")
    return train(recipe, output_dir=tmp_path_factory.mktemp("mt") / "run")


def test_multitask_run_metrics_and_exports(full_run):
    m = full_run.metrics
    assert m["strategy"] == "multitask" and m["tasks"] == {"sentiment": "text-classification",
                                                           "ner": "token-classification"}
    for split in ("validation", "test"):
        assert set(m[split]["sentiment"]) >= {"accuracy", "f1", "loss"}
        assert set(m[split]["ner"]) >= {"f1", "precision", "recall", "f1_PER", "f1_LOC"}
        assert m[split]["combined"] == pytest.approx(
            (m[split]["sentiment"]["accuracy"] + m[split]["ner"]["f1"]) / 2)
    assert m["validation"]["ner"]["f1"] > 0.5  # the NER toy task is learnable in these steps
    assert m["data"]["ner"] == {"train": 96, "validation": 24, "test": 24}
    assert m["labels"]["sentiment"] == ["negative", "positive"]
    run = full_run.run_dir
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk["validation"] == m["validation"]
    for name in ("sentiment", "ner"):
        files = {p.name for p in (run / "tasks" / name).iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= files
        card = (run / "tasks" / name / "README.md").read_text()
        assert "multitask" in card and "trained together with" in card
    assert "tasks/ner" in (run / "README.md").read_text()
    # The token model's export has no pooler (its class has none); the sequence model keeps it.
    from safetensors import safe_open

    with safe_open(str(run / "tasks" / "ner" / "model.safetensors"), "pt") as f:
        assert not any("pooler" in k for k in f.keys())
    with safe_open(str(run / "tasks" / "sentiment" / "model.safetensors"), "pt") as f:
        assert any("pooler" in k for k in f.keys())


def test_exports_share_the_trained_encoder_and_reload_to_the_same_metrics(full_run):
    from safetensors.torch import load_file

    run = full_run.run_dir
    a = load_file(str(run / "tasks" / "ner" / "model.safetensors"))
    b = load_file(str(run / "tasks" / "sentiment" / "model.safetensors"))
    shared = [k for k in a if k.startswith("bert.encoder.") and k in b]
    assert shared and all(torch.equal(a[k], b[k]) for k in shared)
    again = evaluate(run, split="validation")
    for name in ("sentiment", "ner"):
        assert again[name]["loss"] == pytest.approx(full_run.metrics["validation"][name]["loss"], abs=1e-5)
    assert evaluate(run, split="validation", task="ner")["f1"] == pytest.approx(
        full_run.metrics["validation"]["ner"]["f1"])


def test_every_task_directory_loads_with_pipeline_without_the_kit(full_run):
    run = full_run.run_dir
    sentences = ["john visited paris today", "mary visited new york"]
    texts = ["a great film", "a dull film"]
    script = textwrap.dedent(f"""
        import json, sys
        from transformers import pipeline
        ner = pipeline("token-classification", model={str(run / 'tasks' / 'ner')!r}, aggregation_strategy="first")
        cls = pipeline("text-classification", model={str(run / 'tasks' / 'sentiment')!r})
        out = {{"ner": [[(e["entity_group"], e["start"], e["end"]) for e in ents] for ents in ner({sentences!r})],
               "cls": [r["label"] for r in cls({texts!r})]}}
        print(json.dumps(out))
    """)
    plain = run_without_the_kit(script, run)
    kit_ner = predict(run, sentences, task="ner")
    assert plain["ner"] == [[[e["entity_group"], e["start"], e["end"]] for e in ents] for ents in kit_ner]
    assert plain["cls"] == [r["label"] for r in predict(run, texts, task="sentiment")]


def test_predict_and_evaluate_need_a_task_name(full_run, capsys):
    rc, out, err = run_cli(capsys, "predict", full_run.run_dir, "john visited paris")
    assert_cli_error(rc, err, "multi-task run", "--task", "sentiment", "ner")
    rc, out, err = run_cli(capsys, "predict", full_run.run_dir, "--task", "pos", "john visited paris")
    assert_cli_error(rc, err, "'pos' is not a task", "sentiment, ner")
    rc, out, err = run_cli(capsys, "predict", full_run.run_dir, "--task", "ner", "john visited paris")
    assert rc == 0 and "PER 'john'" in out
    rc, out, err = run_cli(capsys, "evaluate", full_run.run_dir, "--data", "x.csv")
    assert rc == 2
    rc, out, err = run_cli(capsys, "push", full_run.run_dir, "--repo-id", "me/x", "--dry-run", "d")
    assert_cli_error(rc, err, "multi-task run", "--task", "sentiment, ner")


def test_push_one_task_stages_its_model(full_run, capsys, tmp_path):
    out = tmp_path / "staged"
    rc, stdout, err = run_cli(capsys, "push", full_run.run_dir, "--repo-id", "me/ner", "--task", "ner",
                              "--dry-run", out)
    assert rc == 0, err
    assert {"config.json", "model.safetensors", "README.md", "recipe.yaml", "metrics.json",
            "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert "token-classification" in (out / "README.md").read_text()


def test_freeze_encoder_and_l2sp(tiny_model_dir, mt_data, tmp_path):
    from safetensors.torch import load_file

    recipe = mt_recipe(tiny_model_dir, mt_data, freeze_encoder=True)
    recipe["train"]["num_train_epochs"] = 1
    result = train(recipe, output_dir=tmp_path / "frozen")
    source = load_file(str(tiny_model_dir / "model.safetensors"))
    saved = load_file(str(result.run_dir / "tasks" / "ner" / "model.safetensors"))
    layer = "encoder.layer.0.attention.self.query.weight"
    assert torch.equal(saved[f"bert.{layer}"], source[layer])
    assert result.metrics["transfer"]["distance_from_source"] == 0.0
    assert result.metrics["params"]["tasks"]["ner"]["trainable"] == 32 * 5 + 5  # the head only

    recipe = mt_recipe(tiny_model_dir, mt_data, regularization={"type": "l2sp", "weight": 0.1})
    recipe["train"]["num_train_epochs"] = 1
    moved = train(recipe, output_dir=tmp_path / "l2sp").metrics["transfer"]["distance_from_source"]
    free = mt_recipe(tiny_model_dir, mt_data)
    free["train"]["num_train_epochs"] = 1
    assert 0 < moved < train(free, output_dir=tmp_path / "free").metrics["transfer"]["distance_from_source"]


def test_loss_weights_scale_each_tasks_training_loss(tiny_model_dir, mt_data):
    from hftransfer.strategies.multitask import MultiTask
    from hftransfer.tasks.multi import task_for

    recipe = load_recipe(mt_recipe(tiny_model_dir, mt_data, loss_weights={"ner": 3}))
    strategy = MultiTask(recipe.strategy_options, task_for(recipe))
    model = strategy.build_model(recipe.model, {"sentiment": ["negative", "positive"],
                                                "ner": ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]})
    batch = {"input_ids": torch.tensor([[101, 2198, 102]]), "attention_mask": torch.ones(1, 3, dtype=torch.long),
             "labels": torch.tensor([[-100, 3, -100]]), "task_index": torch.tensor([1])}
    model.eval()
    plain = model(**batch).loss
    model.train()
    torch.manual_seed(0)
    for module in model.modules():  # no dropout: the same forward pass in both modes
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    assert model(**batch).loss.item() == pytest.approx(3 * plain.item(), rel=1e-5)


# --------------------------------------------------------------------------- adapters


@pytest.fixture(scope="module")
def adapter_run(tiny_model_dir, mt_data, tmp_path_factory):
    recipe = mt_recipe(tiny_model_dir, mt_data, adapters="lora", peft={"r": 4}, sampling="round_robin")
    recipe["train"]["learning_rate"] = 5e-3
    return train(recipe, output_dir=tmp_path_factory.mktemp("mt-lora") / "run")


def test_adapter_per_task_trains_a_small_share_and_saves_side_by_side(adapter_run):
    m = adapter_run.metrics
    for name in ("sentiment", "ner"):
        share = m["params"]["tasks"][name]
        assert share["percent"] <= 1.0 and share["trainable"] > 0
        files = {p.name for p in (adapter_run.run_dir / "tasks" / name).iterdir()}
        assert {"adapter_config.json", "adapter_model.safetensors", "config.json", "README.md"} <= files
        assert "model.safetensors" not in files
    # Each adapter holds its own weights, under PEFT's plain (unnamed) keys.
    from safetensors.torch import load_file

    a = load_file(str(adapter_run.run_dir / "tasks" / "ner" / "adapter_model.safetensors"))
    b = load_file(str(adapter_run.run_dir / "tasks" / "sentiment" / "adapter_model.safetensors"))
    key = next(k for k in a if "lora_B" in k)
    assert key in b and not torch.equal(a[key], b[key])
    assert not any("task_" in k for k in list(a) + list(b))


def test_predict_switches_adapters_on_one_base(adapter_run):
    from hftransfer.engine import load_run, run_task

    run = load_run(adapter_run.run_dir)
    encoder = run.model.encoder
    query = encoder.encoder.layer[0].attention.self.query
    _, ner_model, _ = run_task(run, "ner")
    assert query.active_adapters == [run.model.adapters["ner"]]
    _, sent_model, _ = run_task(run, "sentiment")
    assert query.active_adapters == [run.model.adapters["sentiment"]]
    assert ner_model.get_base_model().bert is sent_model.get_base_model().bert is encoder  # one base
    again = evaluate(adapter_run.run_dir, split="validation")
    for name in ("sentiment", "ner"):
        assert again[name]["loss"] == pytest.approx(adapter_run.metrics["validation"][name]["loss"], abs=1e-5)


def test_adapter_directories_load_with_peft_without_the_kit(adapter_run):
    run = adapter_run.run_dir
    script = textwrap.dedent(f"""
        import json, sys
        from peft import PeftModel
        from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer, pipeline
        path = {str(run / 'tasks' / 'ner')!r}
        config = AutoConfig.from_pretrained(path)
        base_path = json.load(open(path + "/adapter_config.json"))["base_model_name_or_path"]
        model = PeftModel.from_pretrained(AutoModelForTokenClassification.from_pretrained(base_path, config=config), path)
        tagger = pipeline("token-classification", model=model.merge_and_unload(),
                          tokenizer=AutoTokenizer.from_pretrained(path), aggregation_strategy="first")
        ents = tagger(["john visited paris today"])[0]
        print(json.dumps({{"ents": [(e["entity_group"], e["start"], e["end"]) for e in ents]}}))
    """)
    plain = run_without_the_kit(script, run)
    kit = predict(run, ["john visited paris today"], task="ner")[0]
    assert plain["ents"] == [[e["entity_group"], e["start"], e["end"]] for e in kit]


# --------------------------------------------------------------------------- bad input


def test_task_names_that_clash(tiny_model_dir, mt_data, tmp_path, capsys):
    recipe = mt_recipe(tiny_model_dir, mt_data)
    text = json.dumps(recipe)  # JSON is YAML: write the tasks mapping with a repeated key
    text = text.replace('"ner": {"task"', '"sentiment": {"task"')
    path = tmp_path / "r.yaml"
    path.write_text(text)
    rc, _, err = run_cli(capsys, "validate", path)
    assert_cli_error(rc, err, "duplicate key 'sentiment'", "line")

    recipe["tasks"]["NER"] = recipe["tasks"]["ner"]
    user_error("'ner' and 'NER' clash", call=load_recipe, source=recipe)
    bad = mt_recipe(tiny_model_dir, mt_data)
    bad["tasks"]["ner/x"] = bad["tasks"].pop("ner")
    user_error("task name 'ner/x'", call=load_recipe, source=bad)
    bad["tasks"]["combined"] = bad["tasks"].pop("ner/x")
    user_error("reserved", call=load_recipe, source=bad)


@pytest.mark.parametrize("change, needles", [
    (lambda r: r["tasks"]["ner"].pop("data"), ["tasks.ner has no data"]),
    (lambda r: r["tasks"]["ner"].update(data={}), ["tasks.ner.data.train is missing"]),
    (lambda r: r["tasks"].pop("ner"), ["two or more"]),
    (lambda r: r.update(task={"type": "text-classification"}), ["remove the top-level 'task'"]),
    (lambda r: r["strategy"].update(name="full"), ["strategy.name: multitask"]),
    (lambda r: r["strategy"].update(sampling="weighted", sampling_weights={"ner": -1, "sentiment": 1}),
     ["sampling_weights.ner must not be negative"]),
    (lambda r: r["strategy"].update(sampling="weighted", sampling_weights={"ner": 0, "sentiment": 0}),
     ["all zero"]),
    (lambda r: r["strategy"].update(sampling="weighted", sampling_weights={"ner": 0, "sentiment": 2}),
     ["give ner no weight"]),
    (lambda r: r["strategy"].update(loss_weights={"ner": 0, "sentiment": 0}), ["loss_weights are all zero"]),
    (lambda r: r["strategy"].update(loss_weights={"pos": 1}), ["'pos', which is not a task", "sentiment, ner"]),
    (lambda r: r["strategy"].update(sampling="uniform"), ["strategy.sampling 'uniform'", "round_robin"]),
    (lambda r: r["strategy"].update(sampling_weights={"ner": 1}), ["sampling: weighted"]),
    (lambda r: r["strategy"].update(adapters="prefix_tuning"), ["strategy.adapters: 'prefix_tuning' learns prompts rather than adapting"]),
    (lambda r: r["strategy"].update(adapters="lora", freeze_encoder=True), ["frozen already"]),
    (lambda r: r["tasks"]["ner"].update(task={"type": "image-classification"}), ["same kind of input"]),
    (lambda r: r["tasks"]["ner"]["task"].update(colour=1), ["unknown key 'tasks.ner.task.colour'"]),
])
def test_bad_multitask_recipes(tiny_model_dir, mt_data, change, needles):
    recipe = mt_recipe(tiny_model_dir, mt_data)
    change(recipe)
    user_error(*needles, call=load_recipe, source=recipe)


def test_bad_task_data_names_the_task(tiny_model_dir, mt_data, tmp_path, capsys, work):
    recipe = mt_recipe(tiny_model_dir, mt_data)
    recipe["tasks"]["ner"]["data"]["train"] = str(tmp_path / "missing.txt")
    path = tmp_path / "r.yaml"
    path.write_text(json.dumps(recipe))
    rc, _, err = run_cli(capsys, "train", path)
    assert_cli_error(rc, err, "tasks.ner.data.train")
    assert not (work / "runs").exists()


def test_multitask_recipe_round_trips(tiny_model_dir, mt_data):
    recipe = load_recipe(mt_recipe(tiny_model_dir, mt_data, loss_weights={"ner": 2}))
    again = load_recipe(recipe.to_dict())
    assert list(again.members) == ["sentiment", "ner"]
    assert "task" not in recipe.to_dict() and "data" not in recipe.to_dict()
    assert again.to_dict() == recipe.to_dict()


def test_length_grouping_keeps_every_example_and_pads_less():
    rng = np.random.default_rng(0)
    lengths = [rng.integers(1, 100, 400).tolist(), rng.integers(1, 60, 200).tolist()]
    flat = lengths[0] + lengths[1]
    grouped = _epoch(TaskBatchSampler([400, 200], 8, None, False, seed=0, lengths=lengths))
    plain = _epoch(TaskBatchSampler([400, 200], 8, None, False, seed=0))
    assert sorted(i for b in grouped for i in b) == list(range(600))
    assert all(len({i >= 400 for i in b}) == 1 for b in grouped)

    def padding(batches):
        return sum(max(flat[i] for i in b) * len(b) - sum(flat[i] for i in b) for b in batches)

    assert padding(grouped) < 0.2 * padding(plain)


@pytest.mark.slow
@pytest.mark.parametrize("adapters", [None, "lora"])
def test_two_cpu_processes_train_one_task_per_step_and_score_every_example(
        adapters, tiny_model_dir, mt_data, tmp_path):
    from test_scale import env, launch_two_cpu_processes, write_recipe

    strategy = {"adapters": adapters} if adapters else {}
    recipe = mt_recipe(tiny_model_dir, mt_data, **strategy)
    recipe["train"].update(per_device_eval_batch_size=5, num_train_epochs=2,
                           save_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="combined")
    run_dir = tmp_path / "run"
    done = launch_two_cpu_processes(write_recipe(tmp_path / "recipe.yaml", recipe), run_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train"]["world_size"] == 2
    # 64 sentiment + 96 NER rows, global batches of 2 x 8: 4 + 6 steps an epoch.
    assert metrics["train"]["steps"] == 2 * (4 + 6)
    alone = subprocess.run([sys.executable, "-m", "hftransfer", "evaluate", str(run_dir), "--split", "test"],
                           capture_output=True, text=True, env=env(), timeout=600)
    assert alone.returncode == 0, alone.stderr[-3000:]
    single = json.loads(alone.stdout)
    assert metrics["test"]["sentiment"]["accuracy"] == pytest.approx(single["sentiment"]["accuracy"], abs=1e-9)
    assert metrics["test"]["ner"]["f1"] == pytest.approx(single["ner"]["f1"], abs=1e-9)


def test_a_task_of_a_multitask_run_is_a_source_model(adapter_run, full_run, tiny_model_dir, mt_data,
                                                     tmp_path, monkeypatch):
    from hftransfer.models import ModelSpec, source_location

    monkeypatch.setenv("HFTRANSFER_CACHE", str(tmp_path / "cache"))
    user_error("is a multi-task run", "tasks/ner", call=source_location,
               spec=ModelSpec(name_or_path=str(full_run.run_dir)))
    # An adapter task is merged into the base recorded by its run's recipe.
    merged = Path(source_location(ModelSpec(name_or_path=str(adapter_run.run_dir / "tasks" / "ner"))))
    from safetensors.torch import load_file

    base, moved = load_file(str(tiny_model_dir / "model.safetensors")), load_file(str(merged / "model.safetensors"))
    key = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(base[key], moved[f"bert.{key}"])  # the NER adapter's update is in it
    recipe = mt_recipe(tiny_model_dir, mt_data)["tasks"]["ner"]
    result = train({"name": "next", "model": {"name_or_path": str(adapter_run.run_dir / "tasks" / "ner")},
                    **recipe, "strategy": {"name": "full"},
                    "train": {"num_train_epochs": 1, "save_strategy": "no", "disable_tqdm": True}},
                   output_dir=tmp_path / "next")
    assert result.metrics["task"] == "token-classification" and "f1" in result.metrics["validation"]


@pytest.mark.parametrize("adapters", [None, "lora"])
def test_two_image_tasks_share_a_vit(adapters, tiny_vit_dir, image_data, stripes_data, tmp_path):
    """Not only text: two image tasks (PEFT has no task type for them: the heads are saved
    beside each adapter) on one ViT, each exported as a model that pipeline() loads."""
    strategy = {"name": "multitask", **({"adapters": adapters} if adapters else {})}
    recipe = {
        "name": "two-image-tasks", "model": {"name_or_path": str(tiny_vit_dir)},
        "tasks": {"colour": {"task": {"type": "image-classification"},
                             "data": {"train": str(image_data / "train"), "validation": str(image_data / "validation")}},
                  "stripes": {"task": {"type": "image-classification"},
                              "data": {"train": str(stripes_data / "train"),
                                       "validation": str(stripes_data / "validation")}}},
        "strategy": strategy,
        "train": {"num_train_epochs": 2, "per_device_train_batch_size": 4, "learning_rate": 3e-3,
                  "save_strategy": "no", "disable_tqdm": True},
    }
    result = train(recipe, output_dir=tmp_path / "run")
    assert set(result.metrics["validation"]) == {"colour", "stripes", "loss", "combined"}
    files = {p.name for p in (result.run_dir / "tasks" / "stripes").iterdir()}
    assert ("adapter_model.safetensors" if adapters else "model.safetensors") in files
    again = evaluate(result.run_dir, split="validation")
    for name in ("colour", "stripes"):
        assert again[name]["accuracy"] == pytest.approx(result.metrics["validation"][name]["accuracy"])
    if not adapters:
        from transformers import pipeline

        image = next((stripes_data / "validation" / "vertical").iterdir())
        plain = pipeline("image-classification", model=str(result.run_dir / "tasks" / "stripes"))(str(image))
        assert plain[0]["label"] == predict(result.run_dir, [str(image)], task="stripes")[0]["label"]


@pytest.mark.slow
def test_resume_after_kill_continues_the_task_schedule(tiny_model_dir, mt_data, tmp_path):
    """The sampler's schedule is a function of (seed, epoch), so a resumed run skips the batches
    already trained and ends where an uninterrupted run ends."""
    from test_scale import whole_and_resumed

    recipe = mt_recipe(tiny_model_dir, mt_data, sampling="temperature")
    recipe["train"].update(max_steps=40, save_strategy="steps", save_steps=10, learning_rate=3e-3)
    a, b = whole_and_resumed(recipe, tmp_path)
    assert a["train"]["steps"] == b["train"]["steps"] == 40
    for name in ("sentiment", "ner"):  # measured: equal to the last digit (RNG states are restored)
        assert b["validation"][name]["loss"] == pytest.approx(a["validation"][name]["loss"], abs=1e-4)
