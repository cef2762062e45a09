"""Strategy distill: a teacher's outputs teach a student, computed once on the teacher's own
processing (another tokenizer is aligned per example or per word) and cached; a transfer set
of unlabelled inputs; teachers that run on each batch where inputs are augmented."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch
import yaml
from conftest import FILLER, NEGATIVE, POSITIVE
from helpers import assert_same_predictions, refused, run_without_the_kit, tiny_recipe_dict
from safetensors.torch import load_file
from test_image import image_recipe, image_data, tiny_vit_dir  # noqa: F401  (fixtures)
from test_audio import audio_folders, audio_recipe, tiny_w2v_dir  # noqa: F401  (fixtures)
from test_token import ner_data, ner_recipe  # noqa: F401  (fixtures)

import hftransfer
from hftransfer import engine
from hftransfer.strategies import frozen
from hftransfer.strategies.distill import Distill


@pytest.fixture(scope="module")
def teacher_run(tiny_model_dir, toy_data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("teacher") / "run"
    hftransfer.train(tiny_recipe_dict(tiny_model_dir, toy_data, "full", train={"num_train_epochs": 3}), output_dir=run)
    return run


@pytest.fixture(scope="module")
def word_model_dir(tmp_path_factory) -> Path:
    """A tiny BERT whose tokenizer knows whole words only: another tokenizer than the MiniLM's."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out = tmp_path_factory.mktemp("word-bert")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(POSITIVE + NEGATIVE + FILLER))
    (out / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(out / "vocab.txt"))
    tokenizer.save_pretrained(out)
    torch.manual_seed(1)
    BertModel(BertConfig(vocab_size=len(words), hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=48, max_position_embeddings=64)).save_pretrained(out)
    return out


def student(tiny_model_dir, toy_data, teacher, **strategy):
    return tiny_recipe_dict(tiny_model_dir, toy_data, "distill", strategy={"teacher": str(teacher), **strategy})


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def test_alpha_zero_trains_exactly_as_full(tiny_model_dir, toy_data, teacher_run, tmp_path):
    hftransfer.train(tiny_recipe_dict(tiny_model_dir, toy_data, "full"), output_dir=tmp_path / "full")
    hftransfer.train(student(tiny_model_dir, toy_data, teacher_run, alpha=0.0), output_dir=tmp_path / "kd0")
    full, kd0 = weights(tmp_path / "full"), weights(tmp_path / "kd0")
    assert full.keys() == kd0.keys()  # the teacher is not in the student
    for name in full:
        assert torch.equal(full[name], kd0[name]), name


def test_the_teacher_runs_once_and_is_cached(tiny_model_dir, toy_data, teacher_run, tmp_path, monkeypatch):
    monkeypatch.setenv("HFTRANSFER_CACHE", str(tmp_path / "cache"))
    first = hftransfer.train(student(tiny_model_dir, toy_data, teacher_run), output_dir=tmp_path / "a")
    entries = list((tmp_path / "cache" / "teacher").iterdir())
    assert len(entries) == 1
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(entries[0].stat().st_mode) == 0o666 & ~mask  # not safetensors' -rw-------
    transfer = first.metrics["transfer"]
    assert transfer["alpha"] == 0.5 and transfer["teacher_outputs"] == "computed once and cached"

    def never(*args, **kwargs):
        raise AssertionError("the teacher ran although its outputs are cached")

    monkeypatch.setattr(frozen, "compute", never)
    again = hftransfer.train(student(tiny_model_dir, toy_data, teacher_run), output_dir=tmp_path / "b")
    assert again.metrics["test"] == first.metrics["test"]
    # A damaged entry is computed again, not trusted.
    monkeypatch.undo()
    monkeypatch.setenv("HFTRANSFER_CACHE", str(tmp_path / "cache"))
    entries[0].write_bytes(entries[0].read_bytes()[:40])
    hftransfer.train(student(tiny_model_dir, toy_data, teacher_run), output_dir=tmp_path / "c")
    assert load_file(str(entries[0]))["counts"].numel() == 64


def prepared(recipe: dict, tmp_path: Path):
    """The training set as the distill strategy prepares it, and the setup."""
    setup = engine.prepare(hftransfer.recipe.load_recipe(recipe), tmp_path / "checkpoints")
    setup.strategy.build_model(setup.recipe.model, setup.splits.labels)
    engine._load_extras(setup.strategy)
    train_ds, evals = setup.task.encode_splits(setup.splits, setup.processor, augment=True)
    train_ds, _, collator = setup.strategy.prepare_data(train_ds, evals, setup.task.collator(setup.processor),
                                                        setup.splits, setup.processor)
    return setup, train_ds, collator


def test_a_teacher_with_another_tokenizer_reads_its_own_tokens(tiny_model_dir, word_model_dir, toy_data,
                                                                tmp_path):
    teacher = tmp_path / "word-teacher"
    hftransfer.train(tiny_recipe_dict(word_model_dir, toy_data, "full"), output_dir=teacher)
    setup, train_ds, collator = prepared(student(tiny_model_dir, toy_data, teacher), tmp_path)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(teacher).eval()
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    texts = setup.splits.train["text"][:5]
    with torch.no_grad():
        expected = model(**tokenizer(texts, return_tensors="pt", padding=True)).logits
    got = torch.tensor(train_ds["teacher_logits"][:5])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    batch = collator([train_ds[i] for i in range(4)])
    assert batch["teacher_logits"].shape == (4, 2) and "input_ids" in batch


def test_token_distillation_aligns_the_teachers_words(tiny_model_dir, word_model_dir, ner_data, tmp_path):
    teacher = tmp_path / "ner-teacher"
    hftransfer.train(ner_recipe(tiny_model_dir, ner_data, "full"), output_dir=teacher)
    recipe = ner_recipe(word_model_dir, ner_data, "distill")
    recipe["strategy"]["teacher"] = str(teacher)
    setup, train_ds, collator = prepared(recipe, tmp_path)
    words = [len(tokens) for tokens in setup.splits.train["tokens"]]
    assert [len(rows) for rows in train_ds["teacher_logits"]] == words
    assert all(len(row) == len(setup.splits.labels) for rows in train_ds["teacher_logits"][:3] for row in rows)
    batch = collator([train_ds[i] for i in range(3)])
    assert batch["teacher_words"].tolist() == words[:3]
    result = hftransfer.train(recipe, output_dir=tmp_path / "student")
    assert "f1" in result.metrics["test"]


def test_an_unlabelled_transfer_set(tiny_model_dir, toy_data, teacher_run, tmp_path):
    texts = tmp_path / "more.txt"
    import csv

    with open(toy_data / "test.csv", newline="") as f:  # test inputs never reach the student
        seen = sorted({row["text"] for row in csv.DictReader(f)})[:3]
    texts.write_text("\n".join([f"{w} film and {v} day" for w in POSITIVE for v in NEGATIVE] + seen) + "\n")
    recipe = student(tiny_model_dir, toy_data, teacher_run)
    recipe["data"]["unlabeled"] = str(texts)
    recipe["train"]["per_device_train_batch_size"] = 4  # some batches hold no label at all
    result = hftransfer.train(recipe, output_dir=tmp_path / "run")
    assert result.metrics["data"]["unlabeled"] == 64 and result.metrics["data"]["unlabeled_dropped"] == 3
    assert result.metrics["train"]["steps"] == 2 * (64 + 64) // 4
    # The student is a plain transformers model: pipeline() predicts what the kit predicts.
    texts = ["a superb warm story", "a grim cold day", "the film was fine"]
    plain = run_without_the_kit(
        "import json\nfrom transformers import pipeline\n"
        f"clf = pipeline('text-classification', model={str(tmp_path / 'run')!r})\n"
        f"print(json.dumps([clf(t)[0] for t in {texts!r}]))\n", cwd=tmp_path)
    assert_same_predictions(plain, hftransfer.predict(tmp_path / "run", texts))


def test_image_teachers_run_on_every_augmented_batch(tiny_vit_dir, image_data, tmp_path):
    teacher = tmp_path / "vit-teacher"
    hftransfer.train(image_recipe(tiny_vit_dir, image_data, "full"), output_dir=teacher)
    recipe = image_recipe(tiny_vit_dir, image_data, "distill", strategy={"teacher": str(teacher)},
                          model={"name_or_path": str(tiny_vit_dir), "init": {"num_hidden_layers": 1}},
                          task={"augment": {"horizontal_flip": True}})
    recipe["data"]["unlabeled"] = str(image_data / "train")
    result = hftransfer.train(recipe, output_dir=tmp_path / "student")
    assert result.metrics["transfer"]["teacher_outputs"].startswith("computed on every batch")
    assert result.metrics["data"]["unlabeled"] == 32
    assert json.loads((tmp_path / "student" / "config.json").read_text())["num_hidden_layers"] == 1


def test_audio_distillation_with_unlabelled_clips(tiny_w2v_dir, audio_folders, tmp_path):
    teacher = tmp_path / "audio-teacher"
    hftransfer.train(audio_recipe(tiny_w2v_dir, audio_folders, "full"), output_dir=teacher)
    recipe = audio_recipe(tiny_w2v_dir, audio_folders, "distill", strategy={"teacher": str(teacher)},
                          model={"name_or_path": str(tiny_w2v_dir), "init": {"num_hidden_layers": 1}})
    recipe["data"]["unlabeled"] = str(audio_folders / "validation")  # evaluation inputs: refused
    with pytest.raises(hftransfer.HFTransferError, match="every input is also a validation or test input"):
        hftransfer.train(recipe, output_dir=tmp_path / "student")
    recipe["data"]["unlabeled"] = str(audio_folders / "train")
    result = hftransfer.train(recipe, output_dir=tmp_path / "student")
    assert result.metrics["data"]["unlabeled"] == len(list((audio_folders / "train").rglob("*.wav")))
    assert result.metrics["init"]["layers"] == [0]


def test_hidden_state_matching_through_a_projection(tiny_model_dir, toy_data, teacher_run, tmp_path):
    recipe = student(tiny_model_dir, toy_data, teacher_run, hidden={"layers": [[1, 2]], "weight": 0.5})
    recipe["model"]["init"] = {"num_hidden_layers": 1, "hidden_size": 16}
    hftransfer.train(recipe, output_dir=tmp_path / "run")
    saved = weights(tmp_path / "run")
    assert not [n for n in saved if "projection" in n or n.startswith("teacher")]


def test_what_distill_refuses(tiny_model_dir, toy_data, teacher_run, ner_data, image_data, tmp_path, capsys):
    def refused_recipe(recipe: dict, *needles: str) -> None:
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(recipe))
        refused(capsys, tmp_path / "runs", ["validate", str(path)], *needles)

    (tmp_path / "runs").mkdir()
    other = tmp_path / "other-labels"
    other.mkdir()
    for split in ("train", "validation", "test"):
        rows = (toy_data / f"{split}.csv").read_text().replace(",positive", ",good").replace(",negative", ",bad")
        (other / f"{split}.csv").write_text(rows)
    refused_recipe(student(tiny_model_dir, other, teacher_run), "predicts labels", "['negative', 'positive']",
                   "['bad', 'good']")
    ner_teacher = tmp_path / "ner-teacher"
    hftransfer.train(ner_recipe(tiny_model_dir, ner_data, "full", train={"num_train_epochs": 1}),
                     output_dir=ner_teacher)
    refused_recipe(student(tiny_model_dir, toy_data, ner_teacher), "not a trained text-classification model",
                   "ForTokenClassification")
    refused_recipe(tiny_recipe_dict(tiny_model_dir, toy_data, "distill"), "strategy.teacher is missing")
    refused_recipe(student(tiny_model_dir, toy_data, teacher_run, alpha=1.5), "strategy.alpha")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    for unlabeled, needles in ((empty, ["data.unlabeled", "is empty"]),
                               (image_data / "train", ["data.unlabeled", "no data files"])):
        recipe = student(tiny_model_dir, toy_data, teacher_run)
        recipe["data"]["unlabeled"] = str(unlabeled)
        refused_recipe(recipe, *needles)
    recipe = tiny_recipe_dict(tiny_model_dir, toy_data, "full")
    recipe["data"]["unlabeled"] = str(empty)
    refused_recipe(recipe, "data.unlabeled", "strategy distill")


@pytest.mark.slow
def test_resume_after_kill_and_no_teacher_in_checkpoints(tiny_model_dir, toy_data, teacher_run, tmp_path):
    from test_scale import whole_and_resumed

    recipe = student(tiny_model_dir, toy_data, teacher_run)
    recipe["train"].update(max_steps=40, save_strategy="steps", save_steps=10, per_device_train_batch_size=8,
                           learning_rate=3e-3)
    whole, resumed = whole_and_resumed(recipe, tmp_path, resume_flags=("--keep-checkpoints",))
    assert whole["train"]["steps"] == resumed["train"]["steps"] == 40
    assert resumed["validation"]["loss"] == pytest.approx(whole["validation"]["loss"], abs=0.02)
    student_keys = set(weights(tmp_path / "killed"))
    for checkpoint in (tmp_path / "killed" / "checkpoints").iterdir():
        assert set(load_file(str(checkpoint / "model.safetensors"))) == student_keys
