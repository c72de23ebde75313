"""The domain error classes a package tree defines, for checking an API's status table against them."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator, Mapping

from grpclib.const import Status

from spiffe_py.errors import SpiffeError


def import_all(*packages: str) -> None:
    """Import every module of ``packages`` so each error class they define exists."""
    for name in packages:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            # generated code defines no errors; a __main__ module runs its program when imported
            if "._proto" not in info.name and not info.name.endswith(".__main__"):
                importlib.import_module(info.name)


def error_classes(*packages: str) -> list[type[SpiffeError]]:
    """Every subclass of SpiffeError (itself included) defined in a module of ``packages``."""
    import_all(*packages)

    def walk(cls: type[SpiffeError]) -> Iterator[type[SpiffeError]]:
        yield cls
        for sub in cls.__subclasses__():
            yield from walk(sub)

    prefixes = tuple(f"{p}." for p in packages)
    return sorted({c for c in walk(SpiffeError) if c.__module__.startswith(prefixes)}, key=lambda c: c.__qualname__)


def resolving_row(table: Mapping[type[BaseException], Status], cls: type) -> type | None:
    """The class whose row maps ``cls``: the first of its MRO that the table lists."""
    return next((c for c in cls.__mro__ if c in table), None)


def with_text(cls: type[SpiffeError], text: str) -> SpiffeError:
    """An instance of ``cls`` whose message is ``text``, whatever its constructor takes."""
    err = cls.__new__(cls)
    err.args = (text,)
    return err
