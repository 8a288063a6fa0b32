"""Whether a download host answers, asked once with a short timeout.

Without a network, downloads through urllib or huggingface_hub retry for a minute and end in a
long traceback; asking first lets a run fail in seconds with one line that names the config key.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import urlparse

from ltbench.errors import LTBenchError


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Does ``url``'s host accept a TCP connection on its port (443 for https) within ``timeout`` s?"""
    parsed = urlparse(url if "//" in url else f"https://{url}")
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_offline() -> bool:
    """Is Hugging Face Hub access switched off by the environment (``HF_HUB_OFFLINE``)?"""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


@contextmanager
def fetching(key: str, what: str, alternative: str) -> Iterator[None]:
    """Run a download of published weights; without a network, fail at once with one line naming ``key``.

    Offline (``HF_HUB_OFFLINE``, or the Hub does not answer) the Hub is switched to offline mode for
    the call, so weights already in the local cache still load and nothing waits on retries.
    """
    from huggingface_hub import constants

    offline = hub_offline() or not reachable("https://huggingface.co")
    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = saved or offline
    try:
        yield
    except (OSError, RuntimeError) as e:
        why = "HF_HUB_OFFLINE is set" if hub_offline() else "no network" if offline else (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise LTBenchError(f"{key}: cannot fetch {what} ({why}); {alternative}") from None
    finally:
        constants.HF_HUB_OFFLINE = saved
