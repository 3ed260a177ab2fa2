"""``--model``: a model directory, or a Hugging Face repo id resolved through the local cache.

``poolstream serve --model BAAI/bge-small-en-v1.5`` looks the name up in the
Hugging Face cache (``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
``~/.cache/huggingface/hub``: huggingface_hub's own rules) with
``snapshot_download(local_files_only=True)``, so a server never reaches the
network unless its operator allows it (``--allow-download``). A directory
always wins over a name: ``./org/name`` that exists is served as a directory.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedModel:
    """Where a ``--model`` argument led."""

    path: Path  # the model directory (a cache snapshot for names)
    repo_id: str | None  # the name, when it came from the cache


def _looks_like_path(model: str) -> bool:
    return (model.startswith(("/", "./", "../", "~")) or model.count("/") > 1 or os.sep != "/" and os.sep in model
            or model in (".", ".."))


def resolve_model(model: str | os.PathLike[str], *, allow_download: bool = False, revision: str | None = None,
                  cache_dir: str | os.PathLike[str] | None = None) -> ResolvedModel:
    """A directory as is; otherwise a repo id from the Hugging Face cache (or the hub, when
    ``allow_download``). FileNotFoundError names the directory it looked in."""
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.is_dir():
        return ResolvedModel(path, None)
    if _looks_like_path(text) or path.exists():
        raise FileNotFoundError(f"model directory {text!r} does not exist (or is not a directory)")
    try:
        from huggingface_hub import constants, snapshot_download
        from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
        from huggingface_hub.file_download import repo_folder_name
        from huggingface_hub.utils import validate_repo_id
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise FileNotFoundError(f"{text!r} is not a directory, and huggingface_hub is not installed "
                                f"to look it up by name: {e}") from e
    try:
        validate_repo_id(text)
    except HFValidationError as e:
        raise FileNotFoundError(f"{text!r} is neither a model directory nor a Hugging Face repo id ({e})") from None
    cache = Path(cache_dir) if cache_dir is not None else Path(constants.HF_HUB_CACHE)
    looked_in = cache / repo_folder_name(repo_id=text, repo_type="model")
    try:
        snapshot = snapshot_download(repo_id=text, revision=revision, cache_dir=cache_dir,
                                     local_files_only=not allow_download)
    except LocalEntryNotFoundError:
        rev = f" at revision {revision!r}" if revision else ""
        hint = ("pass --allow-download to fetch it from the hub" if not allow_download
                else "the download failed: is the hub reachable (HF_ENDPOINT, HF_HUB_OFFLINE)?")
        raise FileNotFoundError(
            f"model {text!r}{rev} is not a directory and is not in the Hugging Face cache: looked in "
            f"{looked_in} (cache {cache}: set HF_HUB_CACHE or HF_HOME to use another); download it "
            f"first (`hf download {text}`) or {hint}") from None
    except Exception as e:  # noqa: BLE001 - network / auth / revision errors, with their own text
        raise FileNotFoundError(f"model {text!r}: cannot resolve it through the Hugging Face cache "
                                f"({looked_in}): {type(e).__name__}: {e}") from None
    logger.info("model %s resolved to %s", text, snapshot)
    return ResolvedModel(Path(snapshot), text)
