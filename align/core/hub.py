"""Loading by hub name or local path, with a fast, clear failure when the hub cannot be reached.

transformers and datasets retry an unreachable hub for tens of seconds (docs/benchmarks.md) and then raise a long
traceback. Here a name that is not a local path is first tried from the local cache; if that misses, one short
connection probe decides whether to go to the hub at all, so an offline machine gets one actionable message within
seconds.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from align.core.errors import UserError

T = TypeVar("T")


def hub_endpoint() -> str:
    """The hub's address: huggingface.co, or the mirror HF_ENDPOINT names."""
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_reachable(timeout_s: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(hub_endpoint())
    try:
        port = url.port or (80 if url.scheme == "http" else 443)  # a mirror may listen on a port of its own
        socket.create_connection((url.hostname, port), timeout=timeout_s).close()
        return True
    except (OSError, ValueError):  # ValueError: HF_ENDPOINT's port is not a port
        return False


def not_on_hub(error: BaseException) -> bool:
    """The hub answered that it has no such repository (transformers wraps that answer in an OSError). A gated one
    is excluded: its own message says how to ask for access."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    return any(isinstance(e, RepositoryNotFoundError) and not isinstance(e, GatedRepoError)
               for e in (error, error.__cause__))


def looks_local(name: str) -> bool:
    """A path, not a hub name: hub names are `name` or `owner/name`."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def load_local_or_hub(load: Callable[..., T], name: str, what: str, config_key: str) -> T:
    """`load(name, local_files_only=...)` from a directory, the local cache, or the hub, in that order."""
    if Path(name).exists():
        from safetensors import SafetensorError

        try:
            return load(name, local_files_only=True)
        except (OSError, ValueError, SafetensorError) as error:  # a run directory, a file, weights cut short, ...
            raise UserError(f"cannot load {what} from {name} ({config_key}): {str(error).splitlines()[0]} -- name a "
                            "directory a stage wrote (its final/, or an SFT or RM checkpoint-N/), or a hub name"
                            ) from None
    if looks_local(name):
        raise UserError(f"cannot load {what}: no such directory {name} ({config_key} or the stage output it names)")
    try:
        return load(name, local_files_only=True)
    except Exception:  # not in the cache: the only way left is the hub
        pass
    if not hub_reachable():
        raise UserError(
            f"cannot load {what} {name!r}: it is not a local path, not in the Hugging Face cache, and the hub is not "
            f"reachable from this machine. Download it where the hub is reachable "
            f"(`hf download {name} --local-dir DIR`), copy DIR here and run with {config_key}=DIR."
        )
    try:
        return load(name, local_files_only=False)
    except OSError as error:
        if not not_on_hub(error):
            raise
        raise UserError(f"cannot load {what} {name!r} ({config_key}): the hub at {hub_endpoint()} has no such "
                        "repository (a typo, or a private one: `hf auth login` first), and it is not a local path"
                        ) from None
