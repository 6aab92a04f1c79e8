"""Files from a local folder or a Hugging Face hub repository, with hub failures turned into user
messages."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from medusa.errors import MedusaError

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")
FILE_SUFFIXES = (
    ".safetensors",
    ".pt",
    ".pth",
    ".bin",
    ".gguf",
    ".json",
    ".jsonl",
    ".csv",
    ".parquet",
    ".py",
)
# one connection attempt this long replaces the hub libraries' ~100 s of retries
PROBE_SECONDS = 3.0
_TRUE = {"1", "on", "yes", "true"}
# set when the probe failed: messages then say "no connection", not "offline mode is on"
_network_down = False


def is_local(name: str) -> bool:
    return os.path.exists(name)


def looks_like_path(name: str) -> bool:
    """True when a name that does not exist was clearly meant as a local path, not a hub id."""
    if not HUB_ID.match(name) or name.startswith((".", "~")):
        return True
    if Path(name).suffix.lower() in FILE_SUFFIXES:
        return True
    # models/mine beside an existing ./models
    return "/" in name and Path(name.split("/")[0]).is_dir()


def offline_mode() -> bool:
    """Whether the user switched the Hugging Face libraries to offline mode."""
    return any(
        os.environ.get(v, "").strip().lower() in _TRUE
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def network_down() -> bool:
    return _network_down


def needs_hub(name: str | None, local_names: Iterable[str] = ()) -> bool:
    """A name that only the hub can resolve: not a built-in name, not an existing path, shaped like
    a hub id."""
    return (
        bool(name)
        and name not in set(local_names)
        and not is_local(name)
        and not looks_like_path(name)
    )


def hub_endpoint() -> str:
    """The endpoint the hub libraries use (HF_ENDPOINT may name a mirror): probed, and named in
    messages."""
    return os.environ.get("HF_ENDPOINT") or "https://huggingface.co"


def server_error(status: int) -> str:
    """What to say of a hub that answers 5xx: waiting will not help now, another source will."""
    return (
        f"the Hugging Face hub ({hub_endpoint()}) answered HTTP {status}, a server error: retry"
        " later, pass a local folder, or set HF_HUB_OFFLINE=1 to use what is already cached"
    )


def hub_status(timeout: float = PROBE_SECONDS) -> int | None:
    """The HTTP status of one short request to the hub endpoint (proxies from the environment are
    used); None when nothing answered."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(
            urllib.request.Request(hub_endpoint(), method="HEAD"), timeout=timeout
        ) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code  # the server answered
    except (OSError, ValueError):  # DNS, refused, timeout, bad endpoint
        return None


def hub_reachable(timeout: float = PROBE_SECONDS) -> bool:
    """Whether the hub answers at all. A server error (5xx) is one line at once: the hub libraries
    would retry each of a run's requests with backoff, minutes in all, and then fail anyway."""
    status = hub_status(timeout)
    # 501: a server without HEAD, which still works
    if status is not None and status >= 500 and status != 501:
        raise MedusaError(server_error(status))
    return status is not None


def fail_fast_offline(names: Iterable[str | None], local_names: Iterable[str] = ()) -> None:
    """Without network, switch the hub libraries to offline mode at once (cached files still load)
    instead of letting them retry for minutes, and refuse a hub that answers with a server error;
    only probes when a name needs the hub and offline mode is not already on."""
    global _network_down
    local_names = list(local_names)
    wanted = [n for n in names if needs_hub(n, local_names)]
    if offline_mode() or not wanted:
        return
    try:
        if hub_reachable():
            return
    except MedusaError as exc:
        raise MedusaError(f"cannot look up '{wanted[0]}': {exc}") from None
    _network_down = True
    # read when the libraries are imported
    os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    # already imported (in-process use): switch it too
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    config = sys.modules.get("datasets.config")
    if config is not None:
        config.HF_HUB_OFFLINE = config.HF_DATASETS_OFFLINE = True


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
    if looks_like_path(repo):
        raise MedusaError(f"{repo} does not exist: check the path (no such file or folder)")
    from huggingface_hub import hf_hub_download

    errors = _hub_errors()
    try:
        return Path(hf_hub_download(repo, filename, token=token))
    except errors.GatedRepoError:
        raise MedusaError(
            f"{repo} is gated: accept its terms at https://huggingface.co/{repo} and pass"
            " --hf-token (or set HF_TOKEN)"
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
        why = "no connection" if _network_down or not offline_mode() else "offline mode is on"
        raise MedusaError(
            f"cannot load '{repo}': the hub is unreachable ({why}) and it is not in the local"
            " cache; use --setup embedded for the offline embedded model, or pass --model-name"
            " with a local folder"
        ) from None
    except errors.EntryNotFoundError:
        if required:
            raise MedusaError(
                f"hub repository {repo} has no {filename}: is it a model repository?"
            ) from None
        return None
    # server errors, connection trouble, bad ids
    except (errors.HfHubHTTPError, OSError, ValueError) as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None) or 0
        if status >= 500:  # what is left after the library's own retries: say so, not its text
            raise MedusaError(f"cannot load '{repo}': {server_error(status)}") from None
        raise MedusaError(
            f"cannot load '{repo}' from the hub: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        ) from None
