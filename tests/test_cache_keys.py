"""The key of a frozen model's weights (``cache.fingerprint``): a weight still as loaded from files
is named by those files (a Hub snapshot's commit; a local folder's file sizes, times and sampled
bytes) instead of hashed; anything else that can hold other values is hashed whole, so the key
always describes the weights in memory."""
from __future__ import annotations

import os
import shutil

import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification

from hftransfer import cache
from hftransfer.models import load_pretrained
from hftransfer.recipe import ModelSpec, load_recipe
from hftransfer.registry import get_strategy, get_task


@pytest.fixture
def hashed(monkeypatch):
    """The tensors fingerprint hashes whole, by count."""
    calls = []
    original = cache.tensor_bytes

    def counting(tensor):
        calls.append(tuple(tensor.shape))
        return original(tensor)

    monkeypatch.setattr(cache, "tensor_bytes", counting)
    return calls


def load(location, auto=AutoModel, **kwargs):
    return load_pretrained(auto, str(location), ModelSpec(name_or_path=str(location)), **kwargs)


def test_same_files_same_key_without_hashing_a_tensor(tiny_model_dir, hashed):
    first, second = load(tiny_model_dir), load(tiny_model_dir)
    assert cache.fingerprint(first) == cache.fingerprint(second)
    assert hashed == []
    assert all(cache.as_loaded(t) for t in first.state_dict(keep_vars=True).values())


def test_a_touched_or_rewritten_weight_file_changes_the_key(tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    weights = folder / "model.safetensors"
    key = cache.fingerprint(load(folder))
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    touched = cache.fingerprint(load(folder))
    assert touched != key
    # Same size and modification time, other bytes (where no sample reads): a copy tool that
    # keeps times still changes the file's change time.
    data = bytearray(weights.read_bytes())
    unsampled = (cache.SAMPLE_BYTES + len(data) // 2 - cache.SAMPLE_BYTES // 2) // 2
    assert cache.SAMPLE_BYTES < unsampled < len(data) // 2 - cache.SAMPLE_BYTES // 2
    data[unsampled] ^= 0xFF
    stat = weights.stat()
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cache.fingerprint(load(folder)) not in (key, touched)


def test_a_weight_changed_after_loading_is_hashed(tiny_model_dir, hashed):
    model = load(tiny_model_dir)
    key = cache.fingerprint(model)
    bias = model.encoder.layer[0].output.dense.bias
    with torch.no_grad():
        bias.add_(0.5)
    changed = cache.fingerprint(model)
    assert changed != key and hashed == [tuple(bias.shape)]
    same = load(tiny_model_dir)  # the same change to the same files: the same key
    with torch.no_grad():
        same.encoder.layer[0].output.dense.bias.add_(0.5)
    assert cache.fingerprint(same) == changed

    # A write through .data does not count as a change in torch (PEFT merges so); the values do.
    other = load(tiny_model_dir)
    other.encoder.layer[1].attention.self.query.weight.data.mul_(2)
    assert cache.fingerprint(other) != key


def test_weights_not_from_the_files_are_hashed(tiny_model_dir, hashed):
    # The new head (not in the checkpoint) starts at random: its values are part of the key.
    torch.manual_seed(0)
    first = load(tiny_model_dir, AutoModelForSequenceClassification, num_labels=2)
    torch.manual_seed(1)
    second = load(tiny_model_dir, AutoModelForSequenceClassification, num_labels=2)
    assert cache.fingerprint(first) != cache.fingerprint(second)
    assert sorted(hashed) == sorted([(2, 32), (2,)] * 2)
    # ...and a skipped module is not: the features before the head are the same.
    hashed.clear()
    assert (cache.fingerprint(first, skip=first.classifier)
            == cache.fingerprint(second, skip=second.classifier))
    assert cache.fingerprint(first.base_model) == cache.fingerprint(second.base_model)
    assert hashed == []
    # A model built from its config (scratch, model.config) has no files: every weight is hashed.
    scratch = AutoModel.from_config(first.config)
    hashed.clear()
    cache.fingerprint(scratch)
    assert len(hashed) == len(scratch.state_dict())


def test_model_init_transfer_is_hashed_whole(tiny_recipe, hashed):
    # model.init fills a network of another shape from the source: none of its weights are
    # the files' as they are, so each is hashed.
    recipe = load_recipe(tiny_recipe("feature-extraction", model={"init": {"num_hidden_layers": 1}}))
    task = get_task(recipe.task_type)(recipe.task_options)
    strategy = get_strategy("feature-extraction")(recipe.strategy_options, task)
    model = strategy.build_model(recipe.model, ["negative", "positive"])
    assert not any(cache.as_loaded(t) for t in model.state_dict(keep_vars=True).values())
    cache.fingerprint(model.base_model)
    assert len(hashed) == len(model.base_model.state_dict())


def test_a_hub_snapshot_is_keyed_by_its_commit(tiny_model_dir, tmp_path, monkeypatch, hashed):
    import huggingface_hub

    hub = tmp_path / "hub"
    repo = hub / "models--org--tiny"
    commits = ["a" * 40, "b" * 40]
    for commit in commits:  # the same files at two commits
        shutil.copytree(tiny_model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commits[0])
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))

    model = load("org/tiny")
    assert cache.weights_source("org/tiny").startswith(f"hub:org/tiny@{commits[0]}|")
    assert all(cache.as_loaded(t).startswith(f"hub:org/tiny@{commits[0]}|")
               for t in model.state_dict(keep_vars=True).values())
    key = cache.fingerprint(model)
    assert cache.fingerprint(load("org/tiny")) == key and hashed == []
    (repo / "refs" / "main").write_text(commits[1])  # main moved on: another snapshot, another key
    assert cache.fingerprint(load("org/tiny")) != key
    assert hashed == []
