"""Module ``__getattr__`` (PEP 562) that imports a package's public names on first use.

Both ``livermore_nb`` and ``livermore_nb.emulator`` re-export names whose modules
pull in heavy libraries (aiohttp, pandas, numpy); a command that never uses them
should not pay for them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from importlib import import_module
from typing import Any


def lazy_getattr(
    package: str, module_of: Mapping[str, str], namespace: MutableMapping[str, Any]
) -> Callable[[str], Any]:
    """A ``__getattr__`` for ``package``: each name from its module, cached in ``namespace``."""

    def __getattr__(name: str) -> Any:
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f".{module}", package), name)
        namespace[name] = value
        return value

    return __getattr__
