"""The Dockerfile and the systemd units, checked without a container engine.

This machine cannot run ``docker build``, so the Dockerfile is checked statically, hadolint-style:
stages and their order, a version-pinned base, no ``latest``, no ``ADD`` of URLs, no secrets in
``ENV``/``ARG``, ``COPY`` sources that exist, the server stage not running as root, and every
command the images run (``CMD``, ``ENTRYPOINT``, ``HEALTHCHECK``) accepted by the real argument
parsers. The systemd units are checked for their hardening keys and run through
``systemd-analyze verify``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
UNITS = ROOT / "packaging" / "systemd"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages() -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for word, rest in _instructions():
        if word == "FROM":
            name = rest.split(" AS ")[-1].strip() if " AS " in rest else rest
            current = stages.setdefault(name, [])
        if current is not None:
            current.append((word, rest))
    return stages


def test_stages_build_then_copy_only_the_virtualenv() -> None:
    stages = _stages()
    assert list(stages) == ["build", "runtime", "server", "agent"]
    assert ("COPY", "--from=build /opt/spiffe-py /opt/spiffe-py") in stages["runtime"]
    assert stages["server"][0] == ("FROM", "runtime AS server")
    assert stages["agent"][0] == ("FROM", "runtime AS agent")
    # only the build stage installs anything with pip
    assert [s for s, body in stages.items() if any("pip install" in rest for _, rest in body)] == ["build"]


def test_base_image_is_version_pinned_and_nothing_is_fetched_by_url() -> None:
    instructions = _instructions()
    base = next(rest for word, rest in instructions if word == "ARG" and rest.startswith("PYTHON_IMAGE="))
    image = base.split("=", 1)[1]
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-[a-z]+", image), image
    assert all("latest" not in rest for word, rest in instructions if word == "FROM")
    assert all(word != "ADD" for word, _ in instructions)  # COPY only: no remote URLs, no auto-extraction
    assert all("curl " not in rest and "wget " not in rest for word, rest in instructions if word == "RUN")


def test_no_secrets_in_the_image_and_copy_sources_exist() -> None:
    for word, rest in _instructions():
        if word in ("ENV", "ARG"):
            assert not re.search(r"(?i)(password|secret|token|_key)\s*=", rest), rest
        if word == "COPY" and not rest.startswith("--from"):
            *sources, _ = rest.split()
            for source in sources:
                assert (ROOT / source.rstrip("/")).exists(), source
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert {".git", ".venv", "*.key", "*.pem"} <= set(ignored)


def test_the_server_runs_unprivileged_and_each_image_has_a_healthcheck() -> None:
    stages = _stages()
    users = [rest for word, rest in stages["server"] if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    for name in ("server", "agent"):
        assert any(word == "HEALTHCHECK" for word, _ in stages[name])
    assert ("STOPSIGNAL", "SIGTERM") in stages["runtime"]


def _exec_form(rest: str) -> list[str]:
    argv = json.loads(rest[rest.index("["):])
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    return argv


def test_every_command_the_images_run_is_accepted_by_the_real_parsers() -> None:
    from spiffe_agent.cli import build_parser as agent_parser
    from spiffe_server.cli import build_parser as server_parser

    parsers = {"spiffe-server": server_parser(), "spiffe-agent": agent_parser()}
    for name, body in _stages().items():
        if name not in parsers:
            continue
        entrypoint = next(_exec_form(rest) for word, rest in body if word == "ENTRYPOINT")
        cmd = next(_exec_form(rest) for word, rest in body if word == "CMD")
        health = next(_exec_form(rest) for word, rest in body if word == "HEALTHCHECK")
        assert entrypoint == [f"spiffe-{name}"] and health[0] == f"spiffe-{name}"
        for argv in (cmd, health[1:]):
            parsers[entrypoint[0]].parse_args(argv)  # SystemExit on an unknown flag or command


def _unit(name: str) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            keys.setdefault(key.strip(), []).append(value.strip())
    return keys


@pytest.mark.parametrize("name", ["spiffe-server.service", "spiffe-agent.service"])
def test_units_are_hardened(name: str) -> None:
    unit = _unit(name)
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("PrivateTmp", "yes"),
                       ("PrivateDevices", "yes"), ("ProtectKernelModules", "yes"), ("RestrictSUIDSGID", "yes")):
        assert unit.get(key) == [value], key
    assert unit["RuntimeDirectory"] and unit["StateDirectory"]
    assert "@system-service" in unit["SystemCallFilter"]
    assert unit["ExecStart"][0].split()[0].startswith("/opt/spiffe-py/bin/")


def test_the_server_unit_runs_unprivileged_with_its_socket_in_its_runtime_directory() -> None:
    unit = _unit("spiffe-server.service")
    assert unit["User"] == ["spiffe"] and unit["CapabilityBoundingSet"] == [""]
    assert f"/run/{unit['RuntimeDirectory'][0]}/api.sock" in unit["ExecStart"][0]
    assert unit["UMask"] == ["0077"]


def test_the_agent_unit_serves_its_socket_from_its_runtime_directory_with_bounded_capabilities() -> None:
    unit = _unit("spiffe-agent.service")
    assert f"--socket-path /run/{unit['RuntimeDirectory'][0]}/public/api.sock" in unit["ExecStart"][0]
    assert unit["RuntimeDirectoryMode"] == ["0755"]  # the agent refuses a group/world-writable socket dir
    assert set(unit["CapabilityBoundingSet"][0].split()) == {"CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"}


def test_systemd_analyze_verify_accepts_both_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")  # a failure in CI (tests/conftest.py)
    venv_bin = Path(shutil.which("spiffe-server") or ROOT / ".venv" / "bin" / "spiffe-server").parent
    paths = []
    for name in ("spiffe-server.service", "spiffe-agent.service"):
        # verify checks that ExecStart's binary exists: point it at this checkout's
        path = tmp_path / name
        path.write_text((UNITS / name).read_text().replace("/opt/spiffe-py/bin/", f"{venv_bin}/"))
        paths.append(str(path))
    result = subprocess.run([analyze, "verify", *paths], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "spiffe-" not in result.stderr, result.stderr  # no warning about our units either
