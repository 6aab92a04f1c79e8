"""Files from a local folder or a Hugging Face hub repository, with hub failures turned into user messages."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import MedusaError


def is_local(name: str) -> bool:
    return os.path.exists(name)


def _hub_errors():
    from huggingface_hub import errors

    return errors


def fetch(repo: str, filename: str, token: str | None = None, required: bool = True) -> Path | None:
    """Path to ``filename`` of ``repo`` (folder or hub id); None if optional and absent."""
    if is_local(repo):
        path = Path(repo) / filename
        if path.is_file():
            return path
        if required:
            raise MedusaError(f"{repo} has no {filename}: is it a model folder?")
        return None
    from huggingface_hub import hf_hub_download

    errors = _hub_errors()
    try:
        return Path(hf_hub_download(repo, filename, token=token))
    except errors.GatedRepoError:
        raise MedusaError(
            f"{repo} is gated: accept its terms at https://huggingface.co/{repo} and pass --hf-token (or set HF_TOKEN)"
        ) from None
    except errors.RepositoryNotFoundError:
        raise MedusaError(
            f"unknown model '{repo}': no such local folder or hub repository "
            "(check the name; a private repository needs --hf-token)"
        ) from None
    except errors.LocalEntryNotFoundError:
        # offline and not cached: for an optional file this only means "not available here"
        if not required:
            return None
        raise MedusaError(
            f"cannot load '{repo}': the hub is unreachable (offline) and it is not in the local cache; "
            "run without --model-name for the embedded model, or pass a local folder"
        ) from None
    except errors.EntryNotFoundError:
        if required:
            raise MedusaError(f"hub repository {repo} has no {filename}: is it a model repository?") from None
        return None
    except (errors.HfHubHTTPError, OSError, ValueError) as exc:  # connection trouble, bad ids
        raise MedusaError(f"cannot load '{repo}' from the hub: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
