"""The Hub at the kit's edge (``hftransfer.hubfiles``): every Hub id a recipe can name fails at
once, in one line naming its key, when it is not cached and the Hub cannot serve it (downloads
off, or no network: here a loopback port nobody listens on); what is cached is never refused."""
from __future__ import annotations

import socket
import time

import pytest
from helpers import assert_cli_error, loopback_server, run_cli, tiny_recipe_dict

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


# --------------------------------------------------------------------------- a sentence-transformers model on the Hub


class ModelHub:
    """A loopback stand-in for the Hub's file endpoints (``/{repo}/resolve/{revision}/{path}``,
    HEAD and GET, as ``hf_hub_download`` calls them): ``repos[repo][revision]`` maps file paths
    to bytes; every request is recorded (method, path, headers)."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, dict[str, bytes]]] = {}
        self.requests: list[dict] = []
        self.url = ""

    def add(self, repo: str, files: dict[str, bytes], revision: str = "main") -> None:
        self.repos.setdefault(repo, {})[revision] = files

    def asked_for(self, filename: str) -> list[dict]:
        return [r for r in self.requests if r["path"].endswith(f"/{filename}")]


def _model_hub_handler(hub: ModelHub):
    import hashlib
    import json as jsonlib
    import re
    from http.server import BaseHTTPRequestHandler

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 30

        def log_message(self, *args) -> None:
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str], with_body: bool) -> None:
            self.send_response(status)
            for key, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(key, value)
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def _handle(self, with_body: bool) -> None:
            path = self.path.split("?", 1)[0]
            hub.requests.append({"method": self.command, "path": path,
                                 "headers": {k.lower(): v for k, v in self.headers.items()}})
            match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
            if match is None:  # the root (a reachability probe) and any API call: not served here
                body = jsonlib.dumps({"error": f"not in the fake Hub: {path}"}).encode()
                return self._send(404, body, {"Content-Type": "application/json"}, with_body)
            repo, revision, filename = match.groups()
            revisions = hub.repos.get(repo)
            # As on the Hub, a revision's commit (which the client learns from X-Repo-Commit and
            # asks for next, e.g. transformers after reading config.json) names it too.
            commits = {hashlib.sha1(f"{repo}@{r}".encode()).hexdigest(): r for r in revisions or {}}
            revision = commits.get(revision, revision)
            if revisions is None or revision not in revisions:
                code = "RepoNotFound" if revisions is None else "RevisionNotFound"
                return self._send(404, b"{}", {"X-Error-Code": code, "Content-Type": "application/json"}, with_body)
            commit = hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()
            files = revisions[revision]
            if filename not in files:
                return self._send(404, b"{}", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit,
                                               "Content-Type": "application/json"}, with_body)
            body = files[filename]
            self._send(200, body, {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(body).hexdigest()}"',
                                   "Content-Type": "application/octet-stream"}, with_body)

        def do_HEAD(self) -> None:
            self._handle(with_body=False)

        def do_GET(self) -> None:
            self._handle(with_body=True)

    return Handler


@pytest.fixture
def model_hub(monkeypatch, tmp_path):
    """A ModelHub on 127.0.0.1, with HF_ENDPOINT (and what huggingface_hub read from it at
    import) pointing at it, an empty Hub cache, a token in HF_TOKEN and downloads allowed."""
    import secrets

    import huggingface_hub.constants as constants

    hub = ModelHub()
    hub.token = "hf_" + secrets.token_hex(16)
    with loopback_server(_model_hub_handler(hub)) as hub.url:
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            monkeypatch.setenv(name, "0")
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", hub.token)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
        yield hub


def go_offline(monkeypatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


MODULES = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
           {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
           {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]


def st_files(model_dir, pooling: dict | None) -> dict[str, bytes]:
    """The files of a model folder, plus (unless ``pooling`` is None) a sentence-transformers
    modules.json and the Pooling module's config."""
    import json as jsonlib

    files = {p.name: p.read_bytes() for p in model_dir.iterdir() if p.is_file()}
    if pooling is not None:
        files["modules.json"] = jsonlib.dumps(MODULES).encode()
        files["1_Pooling/config.json"] = jsonlib.dumps({"word_embedding_dimension": 32, **pooling}).encode()
    return files


LEGACY_MEAN = {"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False}


def test_a_hub_models_pooling_comes_from_its_own_config_at_its_revision(model_hub, tiny_model_dir, monkeypatch):
    from hftransfer.models import sentence_transformers_pooling
    from hftransfer.recipe import ModelSpec

    model_hub.add("kit-tests/tiny-st", st_files(tiny_model_dir, LEGACY_MEAN))
    model_hub.add("kit-tests/tiny-st", st_files(tiny_model_dir, {"pooling_mode": "cls"}), revision="cls-pooling")
    model_hub.add("kit-tests/tiny-plain", st_files(tiny_model_dir, None))
    assert sentence_transformers_pooling(ModelSpec(name_or_path="kit-tests/tiny-st")) == "mean"
    assert sentence_transformers_pooling(ModelSpec(name_or_path="kit-tests/tiny-st", revision="cls-pooling")) == "cls"
    # No modules.json: not a sentence-transformers model, and no error.
    assert sentence_transformers_pooling(ModelSpec(name_or_path="kit-tests/tiny-plain")) is None
    asked = model_hub.asked_for("modules.json") + model_hub.asked_for("1_Pooling/config.json")
    assert len(model_hub.asked_for("modules.json")) >= 3
    assert {r["path"].split("/resolve/")[1].split("/")[0] for r in asked} == {"main", "cls-pooling"}
    assert all(r["headers"].get("authorization") == f"Bearer {model_hub.token}" for r in asked)

    # Offline, once the model itself is in the local cache (as after a run that loaded it), the
    # same answers come from the cache, without a request.
    import huggingface_hub

    for repo, revision in (("kit-tests/tiny-st", None), ("kit-tests/tiny-st", "cls-pooling"),
                           ("kit-tests/tiny-plain", None)):
        huggingface_hub.hf_hub_download(repo, "config.json", revision=revision)
    go_offline(monkeypatch)
    before = len(model_hub.requests)
    assert sentence_transformers_pooling(ModelSpec(name_or_path="kit-tests/tiny-st")) == "mean"
    assert sentence_transformers_pooling(ModelSpec(name_or_path="kit-tests/tiny-st", revision="cls-pooling")) == "cls"
    assert sentence_transformers_pooling(ModelSpec(name_or_path="kit-tests/tiny-plain")) is None
    assert len(model_hub.requests) == before


def test_offline_without_the_files_cached_the_pooling_is_cls_with_a_warning(model_hub, tiny_model_dir, monkeypatch,
                                                                           caplog):
    import huggingface_hub

    from hftransfer.models import sentence_transformers_pooling
    from hftransfer.recipe import ModelSpec

    model_hub.add("kit-tests/tiny-st", st_files(tiny_model_dir, LEGACY_MEAN))
    huggingface_hub.hf_hub_download("kit-tests/tiny-st", "config.json")  # the model is cached, not modules.json
    go_offline(monkeypatch)
    with caplog.at_level("WARNING", logger="hftransfer"):
        assert sentence_transformers_pooling(ModelSpec(name_or_path="kit-tests/tiny-st")) is None
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "cannot tell whether it is a sentence-transformers checkpoint" in said and "HF_HUB_OFFLINE" in said


@pytest.mark.parametrize("pooling, expected, warned", [
    (LEGACY_MEAN, "mean", False),
    ({"pooling_mode": "cls"}, "cls", False),
    ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}, "cls", False),
    ({"pooling_mode": "max"}, "mean", True),
    ({"pooling_mode": ["cls", "mean"]}, "mean", True),
    (None, "cls", False),
])
def test_feature_extraction_pools_as_a_local_model_says(pooling, expected, warned, tiny_model_dir, tmp_path, caplog):
    from hftransfer.recipe import ModelSpec
    from hftransfer.registry import get_strategy, get_task

    folder = tmp_path / "model"
    folder.mkdir()
    for name, content in st_files(tiny_model_dir, pooling).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    task = get_task("text-classification")(get_task("text-classification").Options())
    strategy_cls = get_strategy("feature-extraction")
    strategy = strategy_cls(strategy_cls.Options(), task)
    with caplog.at_level("WARNING", logger="hftransfer"):
        assert strategy.pooling_for(ModelSpec(name_or_path=str(folder))) == expected
    assert ("pools with" in caplog.text) == warned
    # strategy.pooling always wins.
    chosen = strategy_cls(strategy_cls.Options(pooling="cls"), task)
    assert chosen.pooling_for(ModelSpec(name_or_path=str(folder))) == "cls"
    if pooling is not None:
        (folder / "modules.json").write_text("{not json")
        with pytest.raises(HFTransferError, match="modules.json is not a JSON list; set strategy.pooling"):
            strategy.pooling_for(ModelSpec(name_or_path=str(folder)))


def test_a_feature_extraction_run_of_a_hub_model_uses_its_pooling(model_hub, tiny_model_dir, toy_data, tmp_path,
                                                                  caplog):
    import hftransfer

    model_hub.add("kit-tests/tiny-st", st_files(tiny_model_dir, LEGACY_MEAN))
    model_hub.add("kit-tests/tiny-st", st_files(tiny_model_dir, {"pooling_mode": "cls"}), revision="cls-pooling")
    recipe = tiny_recipe_dict("kit-tests/tiny-st", toy_data, "feature-extraction", train={"num_train_epochs": 1},
                              strategy={"cache": False})
    with caplog.at_level("INFO", logger="hftransfer"):
        hftransfer.train(recipe, output_dir=tmp_path / "mean")
        recipe["model"]["revision"] = "cls-pooling"
        hftransfer.train(recipe, output_dir=tmp_path / "cls")
    said = [r.getMessage() for r in caplog.records if "pooling," in r.getMessage()]
    assert said == ["feature-extraction: mean pooling, linear head", "feature-extraction: cls pooling, linear head"]
