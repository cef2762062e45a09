"""``hftransfer push``: what a run publishes, against a loopback stand-in for the Hub.

The fake Hub implements the endpoints ``huggingface_hub`` calls to create a repo and commit
files (``/api/repos/create``, ``/api/validate-yaml``, ``.../preupload/REV``, ``.../branch/REV``,
``.../commit/REV``). It answers every preupload with ``uploadMode: regular``, so file contents
arrive inline (base64 in the NDJSON commit payload) and can be compared byte for byte with what
``--dry-run`` staged. ``hub.py`` reads ``HF_ENDPOINT`` when it pushes, as a user would set it.
"""
from __future__ import annotations

import base64
import json
import re
import secrets
import shutil
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from helpers import assert_cli_error, loopback_server, run_cli, tiny_recipe_dict

import hftransfer

# The tiny runs these tests publish: one epoch is enough.
ONE_EPOCH = {"num_train_epochs": 1, "learning_rate": 3e-3}

PICKLES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
FULL_FILES = {"README.md", "config.json", "model.safetensors", "tokenizer.json",
              "tokenizer_config.json", "recipe.yaml", "metrics.json"}
ADAPTER_FILES = {"README.md", "config.json", "adapter_config.json", "adapter_model.safetensors",
                 "tokenizer.json", "tokenizer_config.json", "recipe.yaml", "metrics.json"}
# Files a run directory may hold that must never be published.
DECOYS = ("checkpoints/checkpoint-4/model.safetensors", "checkpoints/checkpoint-4/optimizer.pt",
          "checkpoints/checkpoint-4/trainer_state.json", "logs/events.json", "training_args.bin",
          "pytorch_model.bin", "rng_state.pth", "features.pkl", "last.ckpt",
          ".cache/features.json", "notes.txt")
# huggingface_hub fetches its agent-harness registry (no token) before the first request.
TELEMETRY = "/api/agent-harnesses"
FAKE_USER = "tester"  # the namespace of the token's owner on the fake Hub
TEXTS = ["the film was good", "a grim and cold day", "quite lovely story", "it was awful"]


# --------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir, toy_data) -> dict[str, Path]:
    """A full and a LoRA run of the tiny model (1 epoch each), plus files that must stay private."""
    base = tmp_path_factory.mktemp("push-runs")
    out = {}
    for strategy in ("full", "lora"):
        recipe = tiny_recipe_dict(tiny_model_dir, toy_data, strategy, train=ONE_EPOCH)
        run_dir = hftransfer.train(recipe, output_dir=base / strategy).run_dir
        for decoy in DECOYS:
            path = run_dir / decoy
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"not for the Hub")
        out[strategy] = run_dir
    return out


# --------------------------------------------------------------------------- the fake Hub


class FakeHub:
    """What arrived: every request (method, path, headers, body) and the committed files."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.created: list[dict] = []
        self.branches: list[tuple[str, str]] = []
        self.commits: list[dict] = []
        self.validated: list[str] = []
        self.fail: tuple[str, int, str] | None = None  # (path regex, status, error message)
        self.url = ""

    def api_requests(self) -> list[dict]:
        """The requests of the push itself (not huggingface_hub's telemetry look-up)."""
        return [r for r in self.requests if r["path"] != TELEMETRY]


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 30  # a stuck client cannot hold a server thread for ever

        def log_message(self, *args) -> None:  # keep the test output clean
            pass

        def _reply(self, status: int, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _handle(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = self.path.split("?", 1)[0]
            hub.requests.append({"method": method, "path": path, "body": body,
                                 "headers": {k.lower(): v for k, v in self.headers.items()}})
            if hub.fail and re.search(hub.fail[0], path):
                return self._reply(hub.fail[1], {"error": hub.fail[2]})
            if method == "POST" and path == "/api/repos/create":
                payload = json.loads(body)
                hub.created.append(payload)
                # Like the Hub: a bare name goes to the token owner's namespace.
                repo_id = f"{payload.get('organization') or FAKE_USER}/{payload['name']}"
                return self._reply(200, {"url": f"{hub.url}/{repo_id}"})
            if method == "POST" and path == "/api/validate-yaml":
                hub.validated.append(json.loads(body)["content"])
                return self._reply(200, {"errors": [], "warnings": []})
            match = re.fullmatch(r"/api/models/(.+)/(preupload|commit|branch)/([^/]+)", path)
            if method == "POST" and match:
                repo_id, action, revision = match.groups()
                if action == "preupload":
                    files = json.loads(body)["files"]
                    return self._reply(200, {"files": [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                        for f in files]})
                if action == "branch":
                    hub.branches.append((repo_id, revision))
                    return self._reply(200, {})
                lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                assert lines[0]["key"] == "header"
                files = {}
                for line in lines[1:]:
                    assert line["key"] == "file" and line["value"]["encoding"] == "base64", line
                    files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
                hub.commits.append({"repo_id": repo_id, "revision": revision,
                                    "summary": lines[0]["value"]["summary"], "files": files})
                return self._reply(200, {"commitUrl": f"{hub.url}/{repo_id}/commit/{'0' * 40}",
                                         "commitOid": "0" * 40, "pullRequestUrl": None})
            return self._reply(404, {"error": f"no such endpoint in the fake Hub: {method} {path}"})

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

    return Handler


@pytest.fixture
def token() -> str:
    return "hf_" + secrets.token_hex(16)


@pytest.fixture
def hub(monkeypatch, token):
    """A fake Hub on 127.0.0.1 (port chosen by the OS), HF_ENDPOINT pointing at it, a token in
    HF_TOKEN and offline mode off for huggingface_hub."""
    import huggingface_hub.constants

    fake = FakeHub()
    with loopback_server(_handler(fake)) as fake.url:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.setenv("HF_TOKEN", token)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        # huggingface_hub read HF_ENDPOINT at import: its own side requests must not leave the machine
        # either. (hub.py reads HF_ENDPOINT at call time: test_unreachable_hub shows it.)
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", fake.url)
        yield fake


def staged(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def assert_private(files: dict[str, bytes]) -> None:
    """Nothing from checkpoints/, logs/, caches, no pickles, no stray files."""
    for name in files:
        assert "/" not in name, name
        assert not name.lower().endswith(PICKLES), name
        assert name not in ("notes.txt",), name


def assert_no_token(token: str, *texts: str, files: dict[str, bytes] | None = None) -> None:
    for text in texts:
        assert token not in text
    for name, data in (files or {}).items():
        assert token.encode() not in data, f"the token leaked into {name}"


# --------------------------------------------------------------------------- pushing


def test_push_uploads_exactly_the_dry_run_files(runs, hub, token, capsys, caplog, tmp_path):
    dry = tmp_path / "dry"
    rc, out, err = run_cli(capsys, "push", runs["full"], "--repo-id", "me/tiny-full", "--dry-run", dry)
    assert rc == 0, err
    assert hub.requests == []  # a dry run contacts nobody, not even with a token around
    expected = staged(dry)
    assert set(expected) == FULL_FILES

    rc, out2, err2 = run_cli(capsys, "push", runs["full"], "--repo-id", "me/tiny-full", "--private")
    assert rc == 0, err2

    (created,) = hub.created
    assert (created["name"], created["organization"], created.get("visibility")) == ("tiny-full", "me", "private")
    assert len(hub.commits) == 1
    commit = hub.commits[0]
    assert commit["repo_id"] == "me/tiny-full" and commit["revision"] == "main"
    assert set(commit["files"]) == set(expected)
    for name, data in commit["files"].items():
        assert data == expected[name], f"{name} differs from the dry run"
        assert data == (runs["full"] / name).read_bytes(), f"{name} differs from the run"
    assert_private(commit["files"])
    # The card's metadata was validated before upload, as the Hub does.
    assert hub.validated and hub.validated[0] == commit["files"]["README.md"].decode()

    # Every request carried the token, in the Authorization header only.
    assert hub.api_requests()
    assert all(r["headers"].get("authorization") == f"Bearer {token}" for r in hub.api_requests())
    assert_no_token(token, out, err, out2, err2, caplog.text, files=expected)
    for r in hub.requests:  # ... and nowhere else in what was sent
        assert token.encode() not in r["body"] and token not in r["path"]
        assert all(token not in v for k, v in r["headers"].items() if k != "authorization")

    assert f"{hub.url}/me/tiny-full" in out2
    for name in FULL_FILES:
        assert name in out2
    assert err2 == ""


def test_push_lora_run_to_a_branch_sends_the_adapter_only(runs, hub, token, capsys, tmp_path):
    rc, out, err = run_cli(capsys, "push", runs["lora"], "--repo-id", "tiny-lora", "--revision", "dev")
    assert rc == 0, err
    (created,) = hub.created
    assert (created["name"], created["organization"]) == ("tiny-lora", None)
    assert "visibility" not in created and "private" not in created  # the Hub's default: public
    assert hub.branches == [(f"{FAKE_USER}/tiny-lora", "dev")]
    (commit,) = hub.commits
    assert (commit["repo_id"], commit["revision"]) == (f"{FAKE_USER}/tiny-lora", "dev")
    assert set(commit["files"]) == ADAPTER_FILES
    assert "model.safetensors" not in commit["files"]
    for name, data in commit["files"].items():
        assert data == (runs["lora"] / name).read_bytes(), name
    assert_private(commit["files"])
    assert f"{hub.url}/{FAKE_USER}/tiny-lora/tree/dev" in out
    assert "local path" in out  # the note that the adapter's base model is not on the Hub
    assert_no_token(token, out, err)


# --------------------------------------------------------------------------- dry runs


def test_dry_run_full_run(runs, capsys, tmp_path):
    dry = tmp_path / "staged"
    dry.mkdir()  # an empty directory is fine
    rc, out, err = run_cli(capsys, "push", runs["full"], "--repo-id", "me/x", "--dry-run", dry)
    assert rc == 0, err
    files = staged(dry)
    assert set(files) == FULL_FILES
    assert all(files[n] == (runs["full"] / n).read_bytes() for n in files)
    assert_private(files)
    assert "nothing uploaded" in out and "model.safetensors" in out


def test_dry_run_lora_run_stages_the_adapter_only(runs, capsys, tmp_path):
    dry = tmp_path / "staged"
    rc, out, err = run_cli(capsys, "push", runs["lora"], "--repo-id", "me/x", "--dry-run", dry)
    assert rc == 0, err
    files = staged(dry)
    assert set(files) == ADAPTER_FILES
    assert all(files[n] == (runs["lora"] / n).read_bytes() for n in files)
    assert_private(files)


def test_dry_run_merge_adapter_gives_a_plain_transformers_model(runs, capsys, tmp_path):
    from huggingface_hub import ModelCard
    from transformers import pipeline

    from hftransfer.engine import load_run

    dry = tmp_path / "merged"
    rc, out, err = run_cli(capsys, "push", runs["lora"], "--repo-id", "me/x", "--merge-adapter",
                           "--dry-run", dry)
    assert rc == 0, err
    files = staged(dry)
    assert set(files) == FULL_FILES
    assert not any(name.startswith("adapter_") for name in files)
    assert_private(files)
    assert files["recipe.yaml"] == (runs["lora"] / "recipe.yaml").read_bytes()
    assert files["metrics.json"] == (runs["lora"] / "metrics.json").read_bytes()
    card = ModelCard.load(dry / "README.md")
    assert card.data.library_name == "transformers"
    assert "merged-adapter" in card.data.tags

    merged = pipeline("text-classification", model=str(dry), device="cpu")
    run = load_run(runs["lora"])
    adapter = pipeline("text-classification", model=run.model, tokenizer=run.processor, device="cpu")
    got, want = merged(TEXTS), adapter(TEXTS)
    assert [g["label"] for g in got] == [w["label"] for w in want]
    assert {g["label"] for g in got} <= {"negative", "positive"}
    for g, w in zip(got, want):
        assert abs(g["score"] - w["score"]) < 1e-4


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("repo_id", ["me/bad name", "a/b/c", "me/x--y", "me/", "/x", "me/x.git", "me/ünï"])
def test_bad_repo_id(runs, repo_id, capsys, tmp_path):
    dry = tmp_path / "dry"
    rc, _, err = run_cli(capsys, "push", runs["full"], "--repo-id", repo_id, "--dry-run", dry)
    assert_cli_error(rc, err, "--repo-id", "not a valid Hub repo id")
    assert not dry.exists()


def test_not_a_finished_run(tmp_path, capsys):
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.json").write_text("{}")
    for target, needle in ((half, "not a finished hftransfer run"), (tmp_path / "nope", "not a directory")):
        rc, _, err = run_cli(capsys, "push", target, "--repo-id", "me/x", "--dry-run", tmp_path / "dry")
        assert_cli_error(rc, err, needle)
    assert not (tmp_path / "dry").exists()


@pytest.mark.parametrize("strategy,missing", [("full", "model.safetensors"), ("lora", "adapter_model.safetensors")])
def test_run_without_model(runs, strategy, missing, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(runs[strategy], broken)
    (broken / missing).unlink()
    rc, _, err = run_cli(capsys, "push", broken, "--repo-id", "me/x", "--dry-run", tmp_path / "dry")
    assert_cli_error(rc, err, "no complete model", missing)


def test_merge_adapter_on_a_full_run(runs, capsys, tmp_path):
    rc, _, err = run_cli(capsys, "push", runs["full"], "--repo-id", "me/x", "--merge-adapter",
                         "--dry-run", tmp_path / "dry")
    assert_cli_error(rc, err, "--merge-adapter", "full")


def test_dry_run_into_a_non_empty_directory(runs, capsys, tmp_path):
    dry = tmp_path / "dry"
    dry.mkdir()
    (dry / "keep.txt").write_text("mine")
    rc, _, err = run_cli(capsys, "push", runs["full"], "--repo-id", "me/x", "--dry-run", dry)
    assert_cli_error(rc, err, "--dry-run", "not an empty directory")
    assert [p.name for p in dry.iterdir()] == ["keep.txt"]


def test_no_token(runs, hub, monkeypatch, capsys, tmp_path):
    import huggingface_hub.constants

    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    rc, _, err = run_cli(capsys, "push", runs["full"], "--repo-id", "me/x")
    assert_cli_error(rc, err, "no Hugging Face token", "hf auth login", "HF_TOKEN")
    assert hub.requests == []


def test_offline_mode_refuses_to_push(runs, hub, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc, _, err = run_cli(capsys, "push", runs["full"], "--repo-id", "me/x")
    assert_cli_error(rc, err, "HF_HUB_OFFLINE")
    assert hub.requests == []


@pytest.mark.parametrize("where,status,needles", [
    ("/api/repos/create", 403, ("HTTP 403", "creating the repo", "write access")),
    ("/api/repos/create", 401, ("HTTP 401", "hf auth login")),
    ("/commit/", 404, ("HTTP 404", "committing the files", "--repo-id")),
    ("/commit/", 413, ("HTTP 413", "too large")),
])
def test_hub_http_errors(runs, hub, token, where, status, needles, capsys):
    # A server that echoes the token back must not make us print it.
    hub.fail = (where, status, f"refused for token {token}")
    rc, out, err = run_cli(capsys, "push", runs["lora"], "--repo-id", "me/x")
    line = assert_cli_error(rc, err, *needles)
    assert "me/x" in line
    assert_no_token(token, out, err)
    assert hub.api_requests()  # it did try


def test_unreachable_hub(runs, hub, token, monkeypatch, capsys):
    import socket

    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    rc, out, err = run_cli(capsys, "push", runs["full"], "--repo-id", "me/x")
    assert_cli_error(rc, err, "cannot reach the Hub", "HF_ENDPOINT")
    assert_no_token(token, out, err)


def test_adapter_of_a_hub_base_names_it_by_hub_id(runs, capsys, tmp_path):
    """Runs of the embedded MiniLM record its site-packages path as the adapter's base; the
    published adapter_config.json names the Hub id instead (the run itself is left alone)."""
    run = tmp_path / "run"
    shutil.copytree(runs["lora"], run)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["base_model"] = "sentence-transformers/all-MiniLM-L6-v2"
    (run / "metrics.json").write_text(json.dumps(metrics))
    before = (run / "adapter_config.json").read_bytes()
    dry = tmp_path / "dry"
    rc, out, err = run_cli(capsys, "push", run, "--repo-id", "me/x", "--dry-run", dry)
    assert rc == 0, err
    staged_config = json.loads((dry / "adapter_config.json").read_text())
    assert staged_config["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    original = json.loads(before)
    assert {k: v for k, v in staged_config.items() if k != "base_model_name_or_path"} == \
        {k: v for k, v in original.items() if k != "base_model_name_or_path"}
    assert (run / "adapter_config.json").read_bytes() == before
    assert "local path" not in out
