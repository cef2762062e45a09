"""Publishing a finished run on the Hugging Face Hub (``hftransfer push``).

Only the publishable part of a run goes up: the model (``config.json`` + safetensors weights, or
for adapter runs ``adapter_config.json`` + ``adapter_model.safetensors`` + the ``config.json``
with the label names), the tokenizer or processor files, the model card (``README.md``),
``recipe.yaml`` and ``metrics.json``. Checkpoints, logs, caches and pickle files never do.

>>> push_run("runs/sst2-lora", "me/sst2-lora", dry_run="/tmp/sst2-lora-staged")   # look first
>>> push_run("runs/sst2-lora", "me/sst2-lora", private=True)                      # then upload

The token comes from where ``huggingface_hub`` keeps it (``HF_TOKEN``, ``hf auth login``); it is
sent to the Hub in the Authorization header and nowhere else: not printed, logged, staged, or
quoted in error messages. ``HF_ENDPOINT`` is read when pushing, so a private Hub (or a test
server) works without re-importing anything.
"""
from __future__ import annotations

import fnmatch
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cards import card_of, write_merged_card
from .engine import load_run
from .errors import HFTransferError
from .hubfiles import offline_flag
from .models import PROCESSOR_FILES, is_hub_id
from .rundir import ENSEMBLE, check_no_secrets, disk_error, read_metrics, task_model_dir
from .strategies.peft import merge_adapter

# What a run publishes: top-level files of the run directory matching these names. An allow-list,
# so that anything else a run (or a user) leaves in the directory stays private.
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors",
               "model.safetensors.index.json", "model-*-of-*.safetensors",
               "adapter_config.json", "adapter_model.safetensors")
KIT_FILES = ("README.md", "recipe.yaml", "metrics.json", "pipeline.yaml",  # staged runs: every stage
             "reliability.png",  # calibrated runs
             "fusion.json", "fusion.safetensors")  # fusion runs: the fusion layer and how to combine
PUBLISHABLE = MODEL_FILES + PROCESSOR_FILES + KIT_FILES
# Never uploaded, whatever the allow-list says: pickle can run code when loaded.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")

LOGIN_HINT = "log in with `hf auth login` or set the HF_TOKEN environment variable"


@dataclass
class PushResult:
    """What :func:`push_run` did: the files (repo paths, sorted) and where they went."""

    repo_id: str
    files: list[str]
    sizes: dict[str, int]
    dry_run: Path | None = None
    """The staging folder of a dry run; None when the files were uploaded."""
    repo_url: str | None = None
    commit_url: str | None = None
    revision: str | None = None
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- checks


def check_repo_id(repo_id: str) -> None:
    """``namespace/name`` or ``name`` with the characters the Hub accepts; HFTransferError if not."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    problem = None
    if not isinstance(repo_id, str) or not repo_id.strip():
        problem = "it is empty"
    elif repo_id.count("/") > 1 or any(not part for part in repo_id.split("/")):
        problem = "it must be `namespace/name` or `name`"
    else:
        try:
            validate_repo_id(repo_id)
        except HFValidationError:
            problem = ("use letters, digits, '-', '_' and '.', at most 96 characters, no '--' or "
                       "'..', not starting or ending with '-' or '.', not ending in '.git'")
    if problem:
        raise HFTransferError(f"--repo-id {repo_id!r} is not a valid Hub repo id: {problem}")


def check_run(run_dir: Path) -> bool:
    """Raise unless ``run_dir`` holds a complete model; return whether it is an adapter."""
    where = str(run_dir)
    adapter = (run_dir / "adapter_config.json").is_file()
    if adapter:
        missing = [f for f in ("adapter_model.safetensors", "config.json") if not (run_dir / f).is_file()]
    else:
        weights = ((run_dir / "model.safetensors").is_file()
                   or (run_dir / "model.safetensors.index.json").is_file())
        missing = [f for f in ("config.json",) if not (run_dir / f).is_file()]
        if not weights:
            missing.append("model.safetensors")
    if missing:
        raise HFTransferError(
            f"{where!r} holds no complete model (missing {', '.join(missing)}); "
            "retrain the run or restore its files"
        )
    return adapter


def publishable_files(run_dir: Path) -> list[str]:
    """The names of the files of ``run_dir`` that a push uploads (top level only, sorted)."""
    names = []
    for path in sorted(Path(run_dir).iterdir()):
        if not (path.is_file() or path.is_symlink()) or path.name.startswith("."):
            continue
        if path.name.lower().endswith(PICKLE_SUFFIXES):
            continue
        if any(fnmatch.fnmatchcase(path.name, pattern) for pattern in PUBLISHABLE):
            names.append(path.name)
    return names


def check_own_files(run_dir: Path, model_dir: Path) -> None:
    """Refuse to push unless every file a push reads is a plain file of the run itself: not a
    symbolic link, not reached through a linked folder (a link named recipe.yaml would upload
    whatever it points at)."""
    root = run_dir.resolve()
    paths = [model_dir] + [model_dir / name for name in publishable_files(model_dir)]
    paths += [run_dir / name for name in KIT_FILES if (run_dir / name).exists() or (run_dir / name).is_symlink()]
    for path in paths:
        if path.is_symlink():
            raise HFTransferError(
                f"{str(path)!r} is a symbolic link (to {os.readlink(path)!r}); push uploads only the "
                "run's own files: replace the link with the file itself")
        real = path.resolve()
        if real != root and root not in real.parents:
            raise HFTransferError(
                f"{str(path)!r} lies outside the run directory ({str(real)!r}); push uploads only "
                "the run's own files")
        if path.is_file() and path.stat().st_nlink > 1:  # the kit writes no hard links
            raise HFTransferError(
                f"{str(path)!r} is a hard link to a file that may live outside the run; push uploads "
                "only the run's own files: replace it with a plain copy (cp, not ln)")


def _check_dry_run_dir(directory: Path) -> None:
    try:
        taken = directory.exists() and (not directory.is_dir() or any(directory.iterdir()))
    except OSError as exc:  # a name too long, a file in the path...
        raise HFTransferError(f"--dry-run {str(directory)!r}: {exc.strerror}; give a new or empty directory") from None
    if taken:
        raise HFTransferError(
            f"--dry-run {str(directory)!r} already exists and is not an empty directory; "
            "give a new or empty directory"
        )


# --------------------------------------------------------------------------- staging


def _plan(run_dir: Path, adapter: bool, merge_adapter: bool, scratch: Path,
          model_dir: Path | None = None) -> dict[str, Path]:
    """Repo path -> local file for everything a push uploads. Files that differ from the run's
    (a merged model, a fixed-up adapter config) are written under ``scratch``. ``model_dir``:
    where the model is, when not in ``run_dir`` itself (a task of a multi-task run)."""
    model_dir = model_dir or run_dir
    plan = {name: model_dir / name for name in publishable_files(model_dir)}
    plan.update({name: run_dir / name for name in ("recipe.yaml", "metrics.json")})
    if merge_adapter:
        merged = _merge(run_dir, scratch / "merged")
        plan = {n: p for n, p in plan.items()
                if n in ("recipe.yaml", "metrics.json")}  # the rest comes from the merged model
        plan.update({p.name: p for p in sorted(merged.iterdir())
                     if p.is_file() and any(fnmatch.fnmatchcase(p.name, pat) for pat in PUBLISHABLE)
                     and not p.name.lower().endswith(PICKLE_SUFFIXES)})
    elif adapter:
        fixed = _public_adapter_config(model_dir, scratch, read_metrics(run_dir).get("base_model"))
        if fixed is not None:
            plan["adapter_config.json"] = fixed
    if "README.md" not in plan:  # a run from before cards existed: render one
        card = scratch / "card" / "README.md"
        card.parent.mkdir(parents=True, exist_ok=True)
        card_of(run_dir, model_dir.name if model_dir != run_dir else None).save(str(card))
        plan["README.md"] = card
    return dict(sorted(plan.items()))


def _public_adapter_config(run_dir: Path, scratch: Path, public: Any) -> Path | None:
    """An adapter config that names the base model by its Hub id instead of a path on this machine.

    Runs of the embedded MiniLM record the site-packages path of its bundled copy; on the Hub the
    adapter must point at ``sentence-transformers/all-MiniLM-L6-v2``. Other local bases are kept
    (there is no Hub id to name), with a note.
    """
    path = run_dir / "adapter_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise HFTransferError(f"{str(path)!r} is not readable JSON; retrain the run or restore the file") from None
    current = config.get("base_model_name_or_path")
    if not isinstance(current, str) or is_hub_id(current) or not is_hub_id(public):
        return None
    config["base_model_name_or_path"] = public
    out = scratch / "adapter" / "adapter_config.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def _merge(run_dir: Path, out: Path) -> Path:
    """Merge the run's adapter into its base and save a plain transformers model into ``out``."""
    run = load_run(run_dir)
    merged = merge_adapter(run.model, "--merge-adapter", "push the adapter alone")
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out, safe_serialization=True)
    run.processor.save_pretrained(out)
    write_merged_card(run_dir, out)
    return out


def _copy_plan(plan: dict[str, Path], directory: Path) -> None:
    """Copy the files into a hidden sibling, then rename it to ``directory`` (new or empty): a
    failed copy (a full disk) leaves no half-staged folder."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    staging.chmod(0o755)  # as a folder made with mkdir would be, not mkdtemp's private mode
    try:
        for name, source in plan.items():
            shutil.copyfile(source, staging / name)
        os.replace(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------- pushing


def push_run(
    run_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    merge_adapter: bool = False,
    dry_run: str | Path | None = None,
    commit_message: str | None = None,
    task: str | None = None,
) -> PushResult:
    """Upload the publishable part of a finished run to the Hub repo ``repo_id``.

    The repo is created if needed (``private`` applies only then); ``revision`` names a branch,
    created from main if it does not exist. ``merge_adapter`` merges a PEFT adapter into its base
    and uploads a plain transformers model instead. ``dry_run=DIR`` copies exactly what would be
    uploaded into ``DIR`` (new or empty) and contacts nobody.
    """
    check_repo_id(repo_id)
    run_dir = Path(run_dir)
    model_dir = task_model_dir(run_dir, task)
    if (run_dir / ENSEMBLE).is_file():
        raise HFTransferError(
            f"{str(run_dir)!r} is an ensemble: it refers to its member runs and is no model of its "
            "own; push the members (each is a model)")
    check_own_files(run_dir, model_dir)
    adapter = check_run(model_dir)
    if merge_adapter and model_dir != run_dir:
        raise HFTransferError(
            "--merge-adapter does not apply to a task of a multi-task run yet; push its adapter "
            "(without --merge-adapter)")
    if merge_adapter and not adapter:
        strategy = read_metrics(run_dir).get("strategy", "?")
        raise HFTransferError(
            f"--merge-adapter: {str(run_dir)!r} is a `{strategy}` run without an adapter "
            "(no adapter_config.json); push it without --merge-adapter"
        )
    if revision is not None and (not revision.strip() or revision != revision.strip()):
        raise HFTransferError(f"--revision {revision!r} is not a valid branch name")
    token = None
    if dry_run is not None:
        dry_run = Path(dry_run)
        _check_dry_run_dir(dry_run)
    else:
        flag = offline_flag()
        if flag is not None:
            raise HFTransferError(f"{flag} is set: unset it to push to the Hub "
                                  "(or use --dry-run DIR to stage the files only)")
        token = _token()

    try:
        with tempfile.TemporaryDirectory(prefix="hftransfer-push-") as scratch:
            plan = _plan(run_dir, adapter, merge_adapter, Path(scratch), model_dir)
            for path in plan.values():  # the text a push would publish holds no token
                check_no_secrets(path.parent, [path.name])
            sizes = {name: path.stat().st_size for name, path in plan.items()}
            result = PushResult(repo_id=repo_id, files=list(plan), sizes=sizes, revision=revision)
            base = read_metrics(run_dir).get("base_model")
            if adapter and not merge_adapter:
                if not is_hub_id(json.loads(plan["adapter_config.json"].read_text("utf-8"))
                                  .get("base_model_name_or_path")):
                    result.notes.append(
                        f"the adapter's base model {base!r} is a local path: users of the repo need "
                        "that model to load it (or push with --merge-adapter)")
            if "fusion.json" in plan:
                fused = json.loads(plan["fusion.json"].read_text("utf-8")).get("source")
                result.notes.append(
                    f"a fusion model runs beside its source {fused!r}" + (
                        ": a local path, so users of the repo need that model there too"
                        if not is_hub_id(fused) else "") + "; it predicts with hftransfer, not a plain pipeline()")
            if dry_run is not None:
                try:
                    _copy_plan(plan, dry_run)
                except OSError as exc:
                    raise disk_error(exc, dry_run.parent) or HFTransferError(
                        f"--dry-run {str(dry_run)!r}: {exc.strerror}; give a new or empty directory") from None
                result.dry_run = dry_run
                return result
            _upload(plan, repo_id, token, private=private, revision=revision,
                    commit_message=commit_message or f"Upload {run_dir.name} (hftransfer push)",
                    result=result)
            return result
    except HFTransferError as exc:
        message = str(exc)
        if token and token in message:  # belt and braces: no message ever carries the token
            raise HFTransferError(message.replace(token, "***")) from None
        raise


def _token() -> str:
    from huggingface_hub import get_token

    try:
        token = get_token()
    except Exception as exc:  # e.g. a failed OIDC exchange (HF_OIDC_RESOURCE)
        raise HFTransferError(f"could not read a Hugging Face token ({type(exc).__name__}); {LOGIN_HINT}") from None
    if not token:
        raise HFTransferError(f"no Hugging Face token found: {LOGIN_HINT} (a token with write access)")
    return token


def _endpoint() -> str | None:
    """``HF_ENDPOINT`` as set now (huggingface_hub reads it once, at import)."""
    value = os.environ.get("HF_ENDPOINT", "").strip()
    return value.rstrip("/") or None


def _upload(plan: dict[str, Path], repo_id: str, token: str, *, private: bool, revision: str | None,
            commit_message: str, result: PushResult) -> None:
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    api = HfApi(endpoint=_endpoint(), token=token, library_name="hftransfer")
    step = "creating the repo"
    try:
        repo_url = api.create_repo(repo_id, private=True if private else None, exist_ok=True,
                                   repo_type="model")
        # A bare `name` lands in the token owner's namespace; the Hub answers with the full id.
        repo_id = getattr(repo_url, "repo_id", None) or repo_id
        result.repo_id = repo_id
        if revision and revision != "main":
            step = f"creating branch {revision!r}"
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        step = "committing the files"
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path))
                      for name, path in plan.items()]
        info = api.create_commit(repo_id, operations, commit_message=commit_message,
                                 revision=revision, repo_type="model")
    except HfHubHTTPError as exc:
        raise HFTransferError(_http_message(exc, step, repo_id, token)) from None
    except OfflineModeIsEnabled:
        raise HFTransferError("HF_HUB_OFFLINE is set: unset it to push to the Hub "
                              "(or use --dry-run DIR to stage the files only)") from None
    except ValueError as exc:  # e.g. the Hub refused the card's metadata (validate-yaml)
        first = _scrub(str(exc), token).replace("\n", " ")
        raise HFTransferError(f"the Hub refused the upload while {step}: {first[:300]}") from None
    except Exception as exc:
        if _is_transport_error(exc):
            where = api.endpoint
            raise HFTransferError(
                f"cannot reach the Hub at {where} while {step} ({type(exc).__name__}); check your "
                "network connection, proxy settings and HF_ENDPOINT"
            ) from None
        raise
    base = str(repo_url).rstrip("/")
    result.repo_url = base if not revision or revision == "main" else f"{base}/tree/{revision}"
    result.commit_url = getattr(info, "commit_url", None)


def _is_transport_error(exc: BaseException) -> bool:
    """A network failure of the HTTP client huggingface_hub uses (httpx or httpx2)."""
    types: list[type] = [ConnectionError, TimeoutError]
    for module in ("httpx2", "httpx", "requests"):
        try:
            mod = __import__(module)
        except ImportError:
            continue
        for name in ("TransportError", "ConnectionError", "Timeout"):
            if isinstance(getattr(mod, name, None), type):
                types.append(getattr(mod, name))
    return isinstance(exc, tuple(types))


def _scrub(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


_HINTS = {
    400: "the Hub refused the request: check --repo-id and --revision",
    401: f"the token was refused (invalid or expired): {LOGIN_HINT} with a valid token",
    402: "the Hub asks for a paid plan for this operation (e.g. private repos in this namespace)",
    403: "the token may not write to this namespace: use a token with write access to it "
         "(a write token, or a fine-grained token allowed on the repo)",
    404: "the repo or revision was not found: check --repo-id, --revision and that the token can see the repo",
    409: "the repo changed meanwhile or the name is taken: retry, or choose another --repo-id",
    413: "the upload is too large for one commit",
    429: "too many requests: wait a minute and retry",
}


def _http_message(exc: Any, step: str, repo_id: str, token: str | None) -> str:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    hint = _HINTS.get(status) if status is not None else None
    if hint is None:
        hint = ("the Hub had a problem: retry later" if status is not None and status >= 500
                else "check --repo-id, your token and HF_ENDPOINT")
    detail = getattr(exc, "server_message", None) or ""
    detail = " ".join(_scrub(str(detail), token).split())[:200]
    return (f"the Hub answered HTTP {status if status is not None else '?'} while {step} for "
            f"{repo_id!r}" + (f" ({detail})" if detail else "") + f": {hint}")
