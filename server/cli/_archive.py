"""What ``spiffe-server backup`` and ``restore`` do (loaded only by those commands): the datastore and
the keys in one archive.

::

    spiffe-server backup --config server.toml --out /backups/spiffe-$(date +%F).tar.gz   # server may run
    spiffe-server restore --config server.toml --from /backups/spiffe-2026-12-07.tar.gz   # server stopped

The archive (gzip tar, written 0600: it holds private keys) has ``manifest.json`` (format, time,
datastore kind, SHA-256 of every file), ``keys/*`` (CA, JWT and audit checkpoint keys) and, for
SQLite, ``datastore.sqlite3``: a consistent copy taken with SQLite's online backup API while the
server keeps serving. A PostgreSQL datastore is backed up with ``pg_dump`` instead
(docs/operations.md); the archive then holds the keys only. ``restore`` checks every member
against the manifest before it replaces anything, refuses while a server answers on the admin
socket, and replaces existing state only with ``--force``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import socket
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from spiffe_py._cli import package_version
from spiffe_server.cli._common import CliError, fail
from spiffe_server.defaults import ADMIN_SOCKET_NAME, DEFAULT_DATA_DIR_NAME, JOURNAL_ID_FILE

FORMAT = "spiffe-server-backup/1"
MANIFEST = "manifest.json"
DATASTORE = "datastore.sqlite3"
KEYS = "keys"
MAX_MANIFEST_BYTES = 1 << 20
MAX_KEY_BYTES = 1 << 20
MAX_KEYS = 1000
_KEY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


@dataclass(frozen=True, slots=True)
class Locations:
    """Where a server keeps its state, from its configuration (or the defaults)."""

    data_dir: Path
    database: str  # a SQLite path or a postgresql:// URL
    admin_socket: Path
    trust_domain: str | None

    @property
    def postgres(self) -> bool:
        return self.database.startswith(("postgresql://", "postgres://"))

    @property
    def keys(self) -> Path:
        return self.data_dir / KEYS


def locations(args: argparse.Namespace) -> Locations:
    """The data dir, datastore and admin socket from ``--config`` and the flags over it."""
    if args.config:
        from spiffe_server.config import ConfigError, load_config

        try:
            cfg = load_config(Path(args.config), {"data_dir": args.data_dir, "database": args.database})
        except ConfigError as err:
            raise CliError(str(err)) from err
        return Locations(cfg.data_dir, cfg.database_url, cfg.admin_socket, cfg.trust_domain.name)
    data_dir = Path(args.data_dir or DEFAULT_DATA_DIR_NAME)
    return Locations(data_dir, args.database or str(data_dir / "datastore.sqlite3"), data_dir / ADMIN_SOCKET_NAME,
                     None)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_keys(keys: Path) -> dict[str, bytes]:
    """Every key file (regular files only; the directory may not exist yet on a fresh server)."""
    out: dict[str, bytes] = {}
    if not keys.is_dir():
        return out
    for path in sorted(keys.iterdir()):
        if path.is_file() and not path.is_symlink() and _KEY_NAME.fullmatch(path.name):
            out[path.name] = path.read_bytes()
    return out


def _sqlite_copy(source: str, target: Path) -> None:
    """A consistent copy of a live SQLite database (the online backup API: writers are not stopped)."""
    import sqlite3

    if not Path(source).is_file():
        raise CliError(f"backup: no SQLite datastore at {source!r} (--database, or database in the config)")
    src = sqlite3.connect(Path(source).resolve().as_uri() + "?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o600
    tar.addfile(info, io.BytesIO(data))


def backup(args: argparse.Namespace) -> int:
    """``backup``: write the datastore (SQLite) and the keys to one archive; exit status."""
    try:
        return _backup(args)
    except CliError as err:
        return fail(str(err))
    except OSError as err:
        return fail(f"backup: {err.strerror or err}: {err.filename or ''}".rstrip(": "))


def _backup(args: argparse.Namespace) -> int:
    where = locations(args)
    out = Path(args.out)
    keys_before = _read_keys(where.keys)
    with tempfile.TemporaryDirectory(prefix="spiffe-backup-") as tmp:
        files: dict[str, str] = {}
        db_copy = Path(tmp) / DATASTORE
        if not where.postgres:
            _sqlite_copy(where.database, db_copy)
            with db_copy.open("rb") as f:
                files[DATASTORE] = hashlib.file_digest(f, "sha256").hexdigest()
        # keys read before and after the copy: a key the copied CA journal names existed at one of the two times
        keys = {**keys_before, **_read_keys(where.keys)}
        if not keys:
            raise CliError(f"backup: no keys in {str(where.keys)!r}: is --data-dir (or data_dir) right?")
        files.update({f"{KEYS}/{name}": _sha256(data) for name, data in keys.items()})
        journal = where.data_dir / JOURNAL_ID_FILE  # which CA journal (and so which keys) is this server's
        journal_id = journal.read_bytes() if journal.exists() else None
        if journal_id is not None:
            files[JOURNAL_ID_FILE] = _sha256(journal_id)
        manifest = {"format": FORMAT, "version": package_version(), "trust_domain": where.trust_domain,
                    "datastore": "postgresql" if where.postgres else "sqlite", "files": files}
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never over an existing file
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            _add(tar, MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
            for name, data in keys.items():
                _add(tar, f"{KEYS}/{name}", data)
            if journal_id is not None:
                _add(tar, JOURNAL_ID_FILE, journal_id)
            if DATASTORE in files:
                info = tar.gettarinfo(str(db_copy), DATASTORE)
                info.mode, info.uid, info.gid, info.uname, info.gname = 0o600, 0, 0, "", ""
                with db_copy.open("rb") as f:
                    tar.addfile(info, f)
    what = f"{len(keys)} keys" + ("" if where.postgres else " and the SQLite datastore")
    print(f"backup written to {out}: {what}")
    if where.postgres:
        print("the datastore is PostgreSQL: back it up with pg_dump (docs/operations.md, Backup and restore)",
              file=sys.stderr)
    return 0


# -- restore ---------------------------------------------------------------------------------------


def _server_answers(path: Path) -> bool:
    """True when something accepts connections on the admin socket (a running server)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(2)
    try:
        sock.connect(str(path))
    except OSError:
        return False
    finally:
        sock.close()
    return True


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> bytes:
    if member.size > limit:
        raise CliError(f"restore: {member.name} is larger than {limit} bytes")
    handle = tar.extractfile(member)
    if handle is None:
        raise CliError(f"restore: {member.name} is not a regular file")
    return handle.read(limit + 1)


def _manifest(data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise CliError(f"restore: {MANIFEST} is not JSON: {err}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CliError(f"restore: not a spiffe-server backup (format must be {FORMAT!r})")
    files = doc.get("files")
    if (not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())
            or doc.get("datastore") not in ("sqlite", "postgresql")):
        raise CliError(f"restore: {MANIFEST} is malformed")
    for name in files:
        if name not in (DATASTORE, JOURNAL_ID_FILE) and not (
                name.startswith(KEYS + "/") and _KEY_NAME.fullmatch(name[len(KEYS) + 1:])):
            raise CliError(f"restore: unexpected file {name!r} in {MANIFEST}")
    keys = sum(1 for name in files if name.startswith(KEYS + "/"))
    if not 0 < keys <= MAX_KEYS:
        raise CliError(f"restore: {MANIFEST} must list 1..{MAX_KEYS} keys, got {keys}")
    return doc


def _stage(archive: IO[bytes], staging: Path) -> dict[str, Any]:
    """Unpack into ``staging`` (0700), each file checked against the manifest; the manifest."""
    manifest: dict[str, Any] | None = None
    seen: set[str] = set()
    try:
        with tarfile.open(fileobj=archive, mode="r:gz") as tar:
            for member in tar:
                name = member.name
                if not member.isfile():
                    raise CliError(f"restore: {name!r} is not a regular file")
                if manifest is None:
                    if name != MANIFEST:
                        raise CliError(f"restore: the archive must start with {MANIFEST}")
                    manifest = _manifest(_read_member(tar, member, MAX_MANIFEST_BYTES))
                    continue
                want = manifest["files"].get(name)
                if want is None or name in seen:
                    raise CliError(f"restore: {name!r} is not in {MANIFEST} (or appears twice)")
                seen.add(name)
                target = staging / name
                target.parent.mkdir(mode=0o700, exist_ok=True)
                digest = hashlib.sha256()
                handle = tar.extractfile(member)
                limit = MAX_KEY_BYTES if name != DATASTORE else member.size
                if handle is None or member.size > limit:
                    raise CliError(f"restore: {name} is larger than {limit} bytes")
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    while chunk := handle.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
                if digest.hexdigest() != want:
                    raise CliError(f"restore: {name} does not match its SHA-256 in {MANIFEST}: the archive is damaged")
    except (tarfile.TarError, EOFError, OSError) as err:
        raise CliError(f"restore: cannot read the archive (a gzip tar written by backup): {err}") from None
    if manifest is None:
        raise CliError("restore: the archive is empty")
    missing = sorted(set(manifest["files"]) - seen)
    if missing:
        raise CliError(f"restore: {missing[0]} is in {MANIFEST} but not in the archive")
    return manifest


def restore(args: argparse.Namespace) -> int:
    """``restore``: put a backup's datastore (SQLite) and keys back, with the server stopped; exit status."""
    try:
        return _restore(args)
    except CliError as err:
        return fail(str(err))
    except OSError as err:
        return fail(f"restore: {err.strerror or err}: {err.filename or ''}".rstrip(": "))


def _restore(args: argparse.Namespace) -> int:
    where = locations(args)
    if _server_answers(where.admin_socket):
        raise CliError(f"restore: a server answers on {str(where.admin_socket)!r}: stop it first")
    where.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=where.data_dir))  # same file system: renames are atomic
    try:
        with open(args.source, "rb") as archive:
            manifest = _stage(archive, staging)
        _check_target(args, where, manifest)
        _swap_in(where, staging, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    keys = sum(1 for name in manifest["files"] if name.startswith(KEYS + "/"))
    print(f"restored {keys} keys" + (" and the SQLite datastore" if DATASTORE in manifest["files"] else "")
          + f" into {where.data_dir}")
    if manifest["datastore"] == "postgresql":
        print("the datastore is PostgreSQL: restore it with pg_restore (docs/operations.md, Backup and restore)",
              file=sys.stderr)
    return 0


def _check_target(args: argparse.Namespace, where: Locations, manifest: dict[str, Any]) -> None:
    backed_up = manifest.get("trust_domain")
    if where.trust_domain and isinstance(backed_up, str) and backed_up != where.trust_domain:
        raise CliError(f"restore: the backup is of trust domain {backed_up!r}, the configuration says "
                       f"{where.trust_domain!r}")
    if manifest["datastore"] == "sqlite" and where.postgres:
        raise CliError("restore: the backup holds a SQLite datastore but the configuration uses PostgreSQL")
    existing = [str(p) for p in (Path(where.database),) if not where.postgres and p.exists()]
    existing += [str(where.keys)] if _read_keys(where.keys) else []
    if existing and not args.force:
        raise CliError(f"restore: {existing[0]} exists; pass --force to replace the server's state")


def _swap_in(where: Locations, staging: Path, manifest: dict[str, Any]) -> None:
    """Replace the keys directory and the SQLite file by the staged ones (renames within the data dir)."""
    if DATASTORE in manifest["files"]:
        database = Path(where.database)
        for suffix in _SQLITE_SIDE_FILES:  # a stale WAL would be replayed over the restored file
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        os.replace(staging / DATASTORE, database)
    old = staging / "keys.old"
    if where.keys.exists():
        os.replace(where.keys, old)
    os.replace(staging / KEYS, where.keys)  # the old keys go with the staging directory
    if JOURNAL_ID_FILE in manifest["files"]:
        os.replace(staging / JOURNAL_ID_FILE, where.data_dir / JOURNAL_ID_FILE)
