"""Shared fixtures: a tiny random-init BERT saved as a local source model, and toy data.

Unit tests never touch the network and train in seconds on 2 CPU cores.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

POSITIVE = ["good", "great", "lovely", "fine", "superb", "happy", "bright", "warm"]
NEGATIVE = ["bad", "awful", "poor", "sad", "dull", "grim", "cold", "ugly"]
FILLER = ["the", "film", "was", "a", "day", "very", "quite", "story", "and", "it"]


def toy_rows(n: int, seed: int) -> list[tuple[str, str]]:
    """Sentences whose label is carried by one sentiment word: learnable in a few steps."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        word = rng.choice(POSITIVE if label == "positive" else NEGATIVE)
        words = rng.sample(FILLER, rng.randint(2, 6)) + [word]
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]], header: str = "text,label") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "".join(f"{t},{l}\n" for t, l in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random-init BERT with the embedded MiniLM's tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from hftransfer.models import embedded_model_path

    out = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> Path:
    """train/validation/test csv files with text,label columns."""
    out = tmp_path_factory.mktemp("toy-data")
    write_csv(out / "train.csv", toy_rows(64, 0))
    write_csv(out / "validation.csv", toy_rows(16, 1))
    write_csv(out / "test.csv", toy_rows(16, 2))
    return out


@pytest.fixture
def tiny_recipe(tiny_model_dir, toy_data):
    """A recipe mapping that trains the tiny model on the toy data in seconds."""
    from helpers import tiny_recipe_dict

    def make(strategy_name: str = "full", **extra) -> dict:
        return tiny_recipe_dict(tiny_model_dir, toy_data, strategy_name, **extra)

    return make


@pytest.fixture
def shared_data() -> Path:
    """../shared/data; a hard failure (not a skip) on CI when it is missing."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"shared data missing at {SHARED_DATA}: CI must run these tests")
        pytest.skip("../shared/data not present")
    return SHARED_DATA


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    """The current directory of a CLI call (where the default `runs/<name>` would appear)."""
    path = tmp_path / "work"
    path.mkdir()
    monkeypatch.chdir(path)
    return path


@pytest.fixture
def recipe_of(tmp_path, tiny_model_dir, toy_data):
    """Write a tiny recipe (strategy + section changes) to a file; returns its path."""
    import yaml
    from helpers import tiny_recipe_dict

    def make(strategy: str = "full", name: str = "r.yaml", **sections) -> Path:
        recipe = tiny_recipe_dict(tiny_model_dir, toy_data, strategy, **sections)
        recipe["train"]["num_train_epochs"] = sections.get("train", {}).get("num_train_epochs", 1)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
        return path

    return make
