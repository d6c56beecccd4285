"""Where a model comes from: a local directory or GGUF file as given, or a Hugging Face Hub repo id
(`LGAI-EXAONE/EXAONE-4.0-1.2B`) resolved through huggingface_hub (an optional dependency): from
the local cache first, downloading only what is missing unless downloads are off
(`local_files_only=True` or `HF_HUB_OFFLINE=1`, which never touch the network). A GGUF repo holds
several files: `gguf=` picks one by file name or by quant type ("Q4_K_M").

The cache is the one huggingface_hub uses (`HF_HUB_CACHE`, else `HF_HOME/hub`, else
~/.cache/huggingface/hub), read from the environment at each call.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
# What a checkpoint directory needs (weights, config, tokenizer, templates); not other formats' copies.
CHECKPOINT_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.jinja", "*.model", "LICENSE*"]
_TRUE = {"1", "true", "yes", "on"}


def is_repo_id(name: str | Path) -> bool:
    return isinstance(name, str) and bool(_REPO_ID.match(name)) and ".." not in name


def offline_default() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home) / "hub"


def pick_gguf(files: list[str], gguf: str | None, where: str) -> str:
    """The GGUF file of `files` that `gguf` names (a file name, or a quant type such as Q4_K_M
    matched against the names), or the only one when gguf is None."""
    ggufs = sorted(f for f in files if f.lower().endswith(".gguf"))
    if not ggufs:
        raise FileNotFoundError(f"{where} holds no GGUF file")
    if gguf is None:
        if len(ggufs) == 1:
            return ggufs[0]
        raise FileNotFoundError(f"{where} holds {len(ggufs)} GGUF files; pick one with gguf= (or --gguf): "
                                + ", ".join(ggufs))
    exact = [f for f in ggufs if f == gguf or Path(f).name == gguf]
    if exact:
        return exact[0]
    # a quant type is delimited by - or . (its own name has underscores: Q4_K is not Q4_K_M)
    token = re.compile(rf"(^|[-.]){re.escape(gguf)}([-.]|$)", re.IGNORECASE)
    matches = [f for f in ggufs if token.search(Path(f).name[: -len(".gguf")])]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise FileNotFoundError(f"{where} has no GGUF file matching {gguf!r}; it holds: {', '.join(ggufs)}")
    raise FileNotFoundError(f"{gguf!r} matches several GGUF files in {where}: {', '.join(matches)}")


def resolve_model(name_or_path: str | Path, *, gguf: str | None = None, local_files_only: bool | None = None,
                  revision: str | None = None, cache: str | Path | None = None) -> Path:
    """A local path for name_or_path: the path itself when it exists (with gguf=, the matching file
    of a directory of GGUF files), else the Hub repo id's files in the local cache, downloaded
    there first unless downloads are off. FileNotFoundError says why when it cannot."""
    path = Path(name_or_path)
    if path.exists():
        if gguf is not None and path.is_dir():
            return path / pick_gguf([p.name for p in path.iterdir() if p.is_file()], gguf, str(path))
        return path
    if not is_repo_id(name_or_path):
        raise FileNotFoundError(f"model {name_or_path} does not exist")
    return _from_hub(str(name_or_path), gguf, offline_default() if local_files_only is None else local_files_only,
                     revision, str(cache or cache_dir()))


def _cached(hf, repo: str, gguf: str | None, revision: str | None, cache: str) -> Path | None:
    """The repo's files from the cache alone (no network): the snapshot directory of a checkpoint
    repo whose config and weights are there, or the picked GGUF file; None when not cached."""
    from huggingface_hub import errors as hf_errors

    try:
        snapshot = Path(hf.snapshot_download(repo, revision=revision, cache_dir=cache, local_files_only=True))
    except (hf_errors.LocalEntryNotFoundError, OSError, ValueError):
        return None
    files = [str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file()]
    if "config.json" in files:
        if gguf is not None:
            raise FileNotFoundError(f"{repo} is a checkpoint repo, not a GGUF one: drop gguf={gguf!r}")
        return snapshot if any(f.endswith(".safetensors") for f in files) else None
    if not any(f.lower().endswith(".gguf") for f in files):
        return None
    try:
        return snapshot / pick_gguf(files, gguf, f"{repo} (cached)")
    except FileNotFoundError as e:
        if gguf is None:
            raise  # several cached files and none picked: the Hub has at least as many
        e.cached_choice = True
        raise


def _from_hub(repo: str, gguf: str | None, offline: bool, revision: str | None, cache: str) -> Path:
    try:
        import huggingface_hub as hf
        from huggingface_hub import errors as hf_errors
    except ImportError:
        raise FileNotFoundError(f"{repo!r} is not a local path; to use a Hugging Face Hub id, install "
                                "huggingface_hub (pip install huggingface_hub), or download the model and pass "
                                "its directory") from None
    try:
        found = _cached(hf, repo, gguf, revision, cache)
    except FileNotFoundError as e:
        if offline or not getattr(e, "cached_choice", False):
            raise
        found = None  # the file asked for is not cached: the Hub may have it
    if found is not None:
        return found
    if offline:
        raise FileNotFoundError(f"{repo!r} is not a local path and is not in the Hugging Face cache ({cache}); "
                                "downloads are off (local_files_only / HF_HUB_OFFLINE=1)"
                                + (f" (looking for the GGUF file {gguf!r})" if gguf else ""))
    failures = (hf_errors.EntryNotFoundError, hf_errors.RevisionNotFoundError, hf_errors.HfHubHTTPError,
                hf_errors.LocalEntryNotFoundError, OSError, ValueError)
    try:
        files = hf.list_repo_files(repo, revision=revision)
        if "config.json" in files:
            if gguf is not None:
                raise FileNotFoundError(f"{repo} is a checkpoint repo, not a GGUF one: drop gguf={gguf!r}")
            return Path(hf.snapshot_download(repo, revision=revision, cache_dir=cache, allow_patterns=CHECKPOINT_PATTERNS))
        return Path(hf.hf_hub_download(repo, pick_gguf(files, gguf, repo), revision=revision, cache_dir=cache))
    except hf_errors.RepositoryNotFoundError:
        raise FileNotFoundError(f"{repo!r} is neither a local path nor a Hugging Face Hub repo (or it is private: "
                                "log in with `hf auth login`)") from None
    except FileNotFoundError:
        raise
    except failures as e:
        raise FileNotFoundError(f"{repo!r} is not a local path, is not in the Hugging Face cache ({cache}) and "
                                f"could not be downloaded: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                                ) from None
