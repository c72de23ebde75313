"""Upstream secrets: read from 0600 files, re-read on SIGHUP or when the file changes; never shown.

::

    store = SecretStore({"openai": Path("/etc/spiffe/openai.key")})   # SecretFileError if one is unfit
    store.get("openai").reveal()      # only the forwarder calls this, to build the outgoing header
    store.reload()                    # SIGHUP; check_changed() polls file signatures

A :class:`Secret` prints as ``Secret(<redacted>)``; errors name the file and the problem, never
the content.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from spiffe_py.errors import SpiffeError

log = logging.getLogger(__name__)

MAX_SECRET_BYTES = 8 * 1024


class SecretFileError(SpiffeError, ValueError):
    """A secret file is missing, too open, not ours, too large or not a single header-safe line."""


@dataclass(frozen=True, slots=True)
class Secret:
    """A provider key; its value is kept out of repr, str and comparisons in logs."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        """The key itself: for the outgoing header only."""
        return self._value

    def __repr__(self) -> str:
        return "Secret(<redacted>)"

    __str__ = __repr__


_Signature = tuple[int, int, int, int]


def read_secret(path: Path, *, euid: int | None = None) -> tuple[Secret, _Signature]:
    """Read and check one secret file: a regular file owned by us, mode 0600 or stricter, one printable line."""
    euid = os.geteuid() if euid is None else euid
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        raise SecretFileError(f"secret: {path}: cannot open: {err.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SecretFileError(f"secret: {path}: not a regular file")
        if st.st_mode & 0o077:
            raise SecretFileError(f"secret: {path}: mode {stat.S_IMODE(st.st_mode):04o} is too open; chmod 600 it")
        if st.st_uid != euid:
            raise SecretFileError(f"secret: {path}: owned by uid {st.st_uid}, not by the broker (uid {euid})")
        if st.st_size > MAX_SECRET_BYTES:
            raise SecretFileError(f"secret: {path}: larger than {MAX_SECRET_BYTES} bytes")
        data = os.read(fd, MAX_SECRET_BYTES + 1)
    finally:
        os.close(fd)
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise SecretFileError(f"secret: {path}: not ASCII") from None
    # a header value: visible characters only, so it can never split or end a header
    if not text or any(not 0x21 <= ord(c) <= 0x7E for c in text):
        raise SecretFileError(f"secret: {path}: must hold one line of printable ASCII without spaces")
    return Secret(text), (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class SecretStore:
    """Secrets by upstream name; every file is checked at construction (the broker does not start otherwise)."""

    def __init__(self, files: Mapping[str, Path]) -> None:
        self._files = dict(files)
        self._secrets: dict[str, Secret] = {}
        self._signatures: dict[str, _Signature | None] = {}
        for name, path in self._files.items():
            self._secrets[name], self._signatures[name] = read_secret(path)

    def get(self, name: str) -> Secret:
        """The secret of upstream ``name``."""
        return self._secrets[name]

    def reload(self, *, only_changed: bool = False) -> list[str]:
        """Re-read the files (``only_changed``: those whose signature moved); the names that changed.

        A file that became unfit keeps the previous secret in force and is logged (path and reason only).
        """
        changed = []
        for name, path in self._files.items():
            if only_changed:
                try:
                    st = os.stat(path)
                except OSError:
                    st = None
                sig = None if st is None else (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                if sig == self._signatures[name]:
                    continue
            try:
                secret, sig2 = read_secret(path)
            except SecretFileError as err:
                if self._signatures[name] is not None:
                    log.error("%s; the previous secret of upstream %r stays in force", err, name)
                self._signatures[name] = None
                continue
            self._signatures[name] = sig2
            if secret != self._secrets[name]:
                self._secrets[name] = secret
                changed.append(name)
                log.info("secret of upstream %r reloaded from %s", name, path)
        return changed

    def __repr__(self) -> str:
        return f"SecretStore(upstreams={sorted(self._files)})"
