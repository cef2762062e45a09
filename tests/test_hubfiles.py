"""The Hub at the kit's edge (``hftransfer.hubfiles``): every Hub id a recipe can name fails at
once, in one line naming its key, when it is not cached and the Hub cannot serve it (downloads
off, or no network: here a loopback port nobody listens on); what is cached is never refused."""
from __future__ import annotations

import socket
import time

import pytest
from helpers import assert_cli_error, run_cli, tiny_recipe_dict

from hftransfer import data, hubfiles
from hftransfer.errors import HFTransferError

MISSING = "nobody-here/made-up-{}-hft"


def recipe_naming(key: str, model_dir, toy_data) -> dict:
    """A tiny recipe whose ``key`` names a Hub id that is nowhere on this machine."""
    recipe = tiny_recipe_dict(model_dir, toy_data, train={"num_train_epochs": 1})
    name = MISSING.format(key.split(".")[-1])
    if key == "data.dataset":
        recipe["data"] = {"dataset": name}
    elif key == "model.processor":
        recipe["model"]["processor"] = name
    elif key == "model.name_or_path":
        recipe["model"]["name_or_path"] = name
    elif key == "strategy.teacher":
        recipe["strategy"] = {"name": "distill", "teacher": name}
    elif key == "strategy.source":
        recipe["strategy"] = {"name": "fusion", "source": name}
    return recipe


HUB_KEYS = ["model.name_or_path", "data.dataset", "model.processor", "strategy.teacher", "strategy.source"]


@pytest.fixture
def no_network(monkeypatch):
    """Downloads allowed, but the Hub endpoint is a loopback port that nobody listens on."""
    import huggingface_hub.constants

    with socket.socket() as probe:  # a free port, closed again: connecting is refused at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(name, "0")
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
    return endpoint


@pytest.mark.parametrize("key", HUB_KEYS)
def test_an_uncached_hub_id_offline_fails_at_once(key, tiny_model_dir, toy_data, tmp_path, work, capsys):
    recipe = recipe_naming(key, tiny_model_dir, toy_data)
    started = time.perf_counter()
    rc, out, err = run_cli(capsys, "train", _write(tmp_path, recipe))
    assert time.perf_counter() - started < 5
    assert_cli_error(rc, err, f"{key} '{MISSING.format(key.split('.')[-1])}'",
                     "is not in the local Hugging Face cache", "HF_HUB_OFFLINE=1", "HF_HUB_OFFLINE=0")
    assert out == "" and not (work / "runs").exists()


@pytest.mark.parametrize("key", HUB_KEYS)
def test_an_uncached_hub_id_without_a_network_fails_at_once(key, tiny_model_dir, toy_data, tmp_path, work,
                                                             capsys, no_network):
    recipe = recipe_naming(key, tiny_model_dir, toy_data)
    started = time.perf_counter()
    rc, out, err = run_cli(capsys, "train", _write(tmp_path, recipe))
    assert time.perf_counter() - started < 5  # not half a minute of retries
    assert_cli_error(rc, err, f"{key} '{MISSING.format(key.split('.')[-1])}'",
                     f"{no_network} cannot be reached", "connect to the network")
    assert out == "" and not (work / "runs").exists()


def test_hf_datasets_offline_alone_is_named(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert hubfiles.offline_flag() is None and hubfiles.offline_flag("HF_DATASETS_OFFLINE") == "HF_DATASETS_OFFLINE"
    with pytest.raises(HFTransferError, match="HF_DATASETS_OFFLINE=1 forbids"):
        hubfiles.check_available("a/b", "data.dataset", cached=False, fix="x", flags=("HF_DATASETS_OFFLINE",))
    hubfiles.check_available("a/b", "data.dataset", cached=True, fix="x", flags=("HF_DATASETS_OFFLINE",))


def test_a_dataset_that_datasets_prepared_before_is_cached(tmp_path, monkeypatch):
    """datasets falls back to what it prepared (``<cache>/owner___name/config/version/hash``,
    the name in snake case) when the Hub cannot be reached: such a dataset is not refused."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path)
    assert not data.hub_dataset_cached("someone/MyReviews")
    (tmp_path / "someone___my_reviews" / "default" / "0.0.0" / "abc123").mkdir(parents=True)
    assert data.hub_dataset_cached("someone/MyReviews")


def _write(tmp_path, recipe: dict):
    import yaml

    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path
