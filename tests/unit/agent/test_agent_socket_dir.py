"""prepare_socket_dir checks every ancestor of the socket path; the default socket path by user.

Ownership cases need root (chown); the suite runs as root in CI.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import spiffe_agent.config
from spiffe_agent.app import prepare_socket_dir
from spiffe_agent.cli import build_parser
from spiffe_agent.config import (
    ROOT_SOCKET_PATH,
    USER_SOCKET_PATH,
    AgentConfig,
    build_config,
    default_client_socket_path,
    default_socket_path,
)
from spiffe_agent.errors import AgentConfigError

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown and root-owned sticky directories need root")


def _dir(path: Path, mode: int, uid: int | None = None) -> Path:
    path.mkdir()
    path.chmod(mode)
    if uid is not None:
        os.chown(path, uid, -1)
    return path


def test_world_writable_ancestor_is_refused(tmp_path: Path) -> None:
    """A 0777 directory above the socket's own: anyone could rename the agent's directory away."""
    shared = _dir(tmp_path / "shared", 0o777)
    with pytest.raises(AgentConfigError, match=f"unsafe socket directory {str(shared)!r}: writable by other users"):
        prepare_socket_dir(shared / "agent" / "public" / "api.sock")
    assert not (shared / "agent").exists()  # nothing is created inside an unsafe directory


def test_group_writable_ancestor_is_refused(tmp_path: Path) -> None:
    team = _dir(tmp_path / "team", 0o775)
    (team / "public").mkdir(mode=0o755)
    with pytest.raises(AgentConfigError, match="writable by other users \\(mode 0775"):
        prepare_socket_dir(team / "public" / "api.sock")


@needs_root
def test_foreign_owned_ancestor_is_refused(tmp_path: Path) -> None:
    """nobody's own 0755 directory: its owner can swap anything below it."""
    theirs = _dir(tmp_path / "theirs", 0o755, NOBODY)
    with pytest.raises(AgentConfigError, match=f"{str(theirs)!r}: owned by uid {NOBODY}, not root or uid 0"):
        prepare_socket_dir(theirs / "public" / "api.sock")
    assert not (theirs / "public").exists()


@needs_root
def test_root_sticky_directory_is_accepted_below_it_only_our_own_directory(tmp_path: Path) -> None:
    """/tmp's case: root-owned and sticky is fine when the next component is ours (created or existing)."""
    sticky = _dir(tmp_path / "tmp", 0o1777)
    prepare_socket_dir(sticky / "ours" / "public" / "api.sock")
    st = os.stat(sticky / "ours" / "public")
    assert (st.st_uid, st.st_mode & 0o7777) == (0, 0o755)
    squatted = _dir(sticky / "squatted", 0o755, NOBODY)
    with pytest.raises(AgentConfigError, match=f"{str(squatted)!r}: owned by uid {NOBODY}.* in the shared directory"):
        prepare_socket_dir(squatted / "public" / "api.sock")
    assert not (squatted / "public").exists()


@needs_root
def test_sticky_directory_not_owned_by_root_is_refused(tmp_path: Path) -> None:
    sticky = _dir(tmp_path / "tmp", 0o1777, NOBODY)
    with pytest.raises(AgentConfigError, match="owned by uid 65534"):
        prepare_socket_dir(sticky / "ours" / "api.sock")


@needs_root
def test_symlink_in_a_shared_directory_is_refused_even_to_a_safe_target(tmp_path: Path) -> None:
    """The link's owner can re-point it: clients following the written path would reach another socket."""
    sticky = _dir(tmp_path / "tmp", 0o1777)
    safe = _dir(tmp_path / "safe", 0o755)
    link = sticky / "agent"
    link.symlink_to(safe)
    os.lchown(link, NOBODY, -1)
    with pytest.raises(AgentConfigError, match=f"{str(link)!r}: owned by uid {NOBODY}"):
        prepare_socket_dir(link / "api.sock")


def test_symlink_in_a_safe_directory_is_followed_and_its_target_checked(tmp_path: Path) -> None:
    target_parent = _dir(tmp_path / "shared", 0o777)
    (tmp_path / "run").symlink_to(target_parent)
    with pytest.raises(AgentConfigError, match=f"{str(target_parent)!r}: writable by other users"):
        prepare_socket_dir(tmp_path / "run" / "agent" / "api.sock")
    safe = _dir(tmp_path / "safe", 0o755)
    (tmp_path / "var-run").symlink_to(safe)
    prepare_socket_dir(tmp_path / "var-run" / "agent" / "api.sock")
    assert (safe / "agent").is_dir()


def test_default_socket_path_is_under_run_for_root_only() -> None:
    assert ROOT_SOCKET_PATH == "/run/spiffe-py-agent/public/api.sock"
    assert USER_SOCKET_PATH == "/tmp/spiffe-py-agent/public/api.sock"
    assert default_socket_path(0) == ROOT_SOCKET_PATH
    assert default_socket_path(1000) == USER_SOCKET_PATH
    assert AgentConfig().socket_path == default_socket_path(os.geteuid())


def test_socket_path_from_toml_is_still_type_checked() -> None:
    with pytest.raises(AgentConfigError, match="socket_path must be of type str"):
        build_config({"trust_domain": "td", "socket_path": 5})
    assert build_config({"socket_path": "/x/api.sock"}).socket_path == "/x/api.sock"


def test_run_leaves_the_default_to_the_config_and_clients_prefer_roots_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert build_parser().parse_args(["run"]).socket_path is None
    root_sock = tmp_path / "run" / "spiffe-py-agent" / "public" / "api.sock"
    monkeypatch.setattr(spiffe_agent.config, "ROOT_SOCKET_PATH", str(root_sock))
    assert default_client_socket_path() == USER_SOCKET_PATH  # no agent of root's here
    root_sock.parent.mkdir(parents=True)
    assert default_client_socket_path() == str(root_sock)
    assert build_parser().parse_args(["api", "fetch", "x509"]).socket_path == str(root_sock)
    assert build_parser().parse_args(["healthcheck"]).socket_path == str(root_sock)


def test_spiffe_endpoint_socket_sets_the_client_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPIFFE_ENDPOINT_SOCKET", f"unix://{tmp_path}/agent.sock")
    assert build_parser().parse_args(["api", "fetch", "x509"]).socket_path == f"{tmp_path}/agent.sock"
    assert build_parser().parse_args(["healthcheck", "--socket-path", "/x.sock"]).socket_path == "/x.sock"
    assert build_parser().parse_args(["run"]).socket_path is None  # the agent's own socket is the config's
    monkeypatch.setenv("SPIFFE_ENDPOINT_SOCKET", "tcp://127.0.0.1:8000")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["healthcheck"])
