"""The Hugging Face Hub at the kit's edge: whether downloads are off, whether the Hub answers,
whether a repo can be served (from the local cache or the Hub) before a library spends half a
minute retrying, and single small files of a repo (from the local cache first).

Everything here goes through ``huggingface_hub`` (its cache, ``HF_TOKEN`` or the stored login,
``HF_ENDPOINT``), so it sees what ``transformers`` and ``datasets`` see when they download.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import HFTransferError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
"""The shape of a Hub repo id: ``name`` or ``owner/name``."""
_ON = ("1", "ON", "YES", "TRUE")


def offline_flag(*extra: str) -> str | None:
    """The name of the variable that turns downloads off (``HF_HUB_OFFLINE``,
    ``TRANSFORMERS_OFFLINE``, then ``extra`` ones such as ``HF_DATASETS_OFFLINE``), or None.
    Read now: the Hub client reads its variable once, when it is imported."""
    from huggingface_hub import constants

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", *extra):
        if (os.environ.get(name) or "").strip().upper() in _ON:
            return name
    return "HF_HUB_OFFLINE" if constants.HF_HUB_OFFLINE else None


_REACHABLE: dict[str, bool] = {}


def hub_reachable(timeout: float = 5.0) -> bool:
    """Whether the Hub answers at all (one request, no retries; remembered for the process),
    through the Hub client's own session so proxies and custom endpoints apply."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if constants.ENDPOINT not in _REACHABLE:
        try:
            get_session().head(constants.ENDPOINT, timeout=timeout)
            _REACHABLE[constants.ENDPOINT] = True
        except Exception:  # DNS, refused, timed out, TLS: the download would fail the same way
            _REACHABLE[constants.ENDPOINT] = False
    return _REACHABLE[constants.ENDPOINT]


def in_cache(repo_id: str, filenames: tuple[str, ...], revision: str | None = None,
             repo_type: str = "model") -> bool:
    """Whether any of ``filenames`` of the repo (at ``revision``) is in the local Hub cache."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        try:
            if isinstance(try_to_load_from_cache(repo_id, filename, revision=revision, repo_type=repo_type), str):
                return True
        except Exception:  # an unreadable cache is no cache: decide from the network
            pass
    return False


def check_available(name: str, where: str, *, cached: bool, fix: str, flags: tuple[str, ...] = ()) -> None:
    """Fail at once, with one line, when the Hub repo ``name`` (named by the recipe at ``where``)
    is not ``cached`` and the Hub cannot serve it: downloads are off (``HF_HUB_OFFLINE``, or one
    of ``flags``) or the Hub does not answer. ``fix`` ends the message: what else the user can
    do. (Left to them, transformers, datasets and the Hub client retry for half a minute and log
    every attempt before failing with a vaguer message.)"""
    if cached:
        return
    flag = offline_flag(*flags)
    if flag is not None:
        raise HFTransferError(
            f"{where} {name!r} is not in the local Hugging Face cache, and {flag}=1 forbids "
            f"downloading it: set {flag}=0 on a machine with a network, {fix}")
    if not hub_reachable():
        from huggingface_hub import constants

        raise HFTransferError(
            f"{where} {name!r} is not in the local Hugging Face cache, and {constants.ENDPOINT} "
            f"cannot be reached (no network?): connect to the network, {fix}")


class Unavailable(Exception):
    """A file of a Hub repo that neither the local cache nor the Hub can give now."""


def repo_file(repo_id: str, filename: str, revision: str | None = None) -> Path | None:
    """A file of a Hub model repo at ``revision``: from the local cache, else downloaded into
    it (with the token ``huggingface_hub`` finds); None when the repo has no such file. Raises
    :class:`Unavailable` (one line) when downloads are off or fail and the cache lacks it."""
    from huggingface_hub import _CACHED_NO_EXIST, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import RemoteEntryNotFoundError

    try:
        cached = try_to_load_from_cache(repo_id, filename, revision=revision)
    except Exception:  # an unreadable cache is no cache
        cached = None
    if isinstance(cached, str):
        return Path(cached)
    if cached is _CACHED_NO_EXIST:  # an earlier download learnt that the repo has no such file
        return None
    flag = offline_flag()
    if flag is not None:
        raise Unavailable(f"{filename} is not in the local Hugging Face cache and {flag}=1 forbids downloading it")
    if not hub_reachable():
        raise Unavailable(f"{filename} is not in the local Hugging Face cache and the Hub cannot be reached")
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision))
    except RemoteEntryNotFoundError:
        return None
    except Exception as exc:  # gated, revoked, network trouble: the caller decides what it costs
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise Unavailable(f"{filename} could not be downloaded ({type(exc).__name__}: {text})") from None
