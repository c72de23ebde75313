"""A private Docker engine for integration tests.

Usage::

    engine = DockerEngine.start(Path(tempfile.mkdtemp(dir="/tmp")))
    cid = engine.run(["sleep", "60"], labels={"app": "web"}, share=sock_dir)
    pid = engine.pid(cid)          # host PID; /proc/<pid>/cgroup names the container
    engine.stop()

The engine runs on its own socket, data root and exec root under a temporary directory, so
it never touches a system engine. Set ``SPIFFE_PY_TEST_DOCKER_HOST`` to reuse a running
engine instead (it is then left running). Images cannot be pulled (no registry), so the test
image is imported from a busybox-static rootfs; containers run the host Python through
read-only bind mounts (:func:`host_python_binds`).
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

IMAGE = "local/busybox:1"
LABEL = "spiffe-py-test"  # set on every container we start, so stop() can remove them all
REUSE_ENV = "SPIFFE_PY_TEST_DOCKER_HOST"
START_TIMEOUT = 60.0
COMMAND_TIMEOUT = 60.0
REPO_ROOT = Path(__file__).resolve().parents[2]


class EngineUnavailable(Exception):
    """The Docker engine could not be found or started; str() is the reason."""


@dataclass(frozen=True, slots=True)
class Bind:
    """A bind mount: host path -> container path."""

    host: Path
    container: str
    read_only: bool = True

    def volume_arg(self) -> str:
        """Render as a `docker run -v` value."""
        return f"{self.host}:{self.container}:{'ro' if self.read_only else 'rw'}"


def host_python_binds() -> list[Bind]:
    """Read-only binds that let a container run this interpreter (sys.executable) unchanged.

    /usr, /lib, /lib64 carry the loader and shared libraries; the venv and the pyenv root
    carry the interpreter and site-packages; the repo root carries the editable install.
    """
    candidates = [Path("/usr"), Path("/lib"), Path("/lib64"), Path(sys.prefix), _python_root(), REPO_ROOT]
    existing = [p for p in candidates if p.exists()]
    # A path inside another bind (the venv inside the repo) is already visible.
    kept = [p for p in dict.fromkeys(existing) if not any(o != p and p.is_relative_to(o) for o in existing)]
    return [Bind(p, str(p)) for p in kept]


def _python_root() -> Path:
    """Directory holding the base interpreter: the pyenv root when pyenv is used."""
    base = Path(sys.base_prefix)
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    return pyenv if base.is_relative_to(pyenv) else base


def busybox_rootfs_tar(busybox: Path) -> bytes:
    """Build a rootfs tarball: static busybox plus one relative symlink per applet."""
    applets = subprocess.run(
        [str(busybox), "--list"], check=True, capture_output=True, text=True, timeout=COMMAND_TIMEOUT
    ).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, mode in (("bin", 0o755), ("etc", 0o755), ("root", 0o700), ("tmp", 0o1777)):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        tar.add(str(busybox), arcname="bin/busybox")
        for applet in applets:
            if applet != "busybox":
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
    return buf.getvalue()


class DockerEngine:
    """A Docker engine reachable at `host`, with the test image `image` imported."""

    def __init__(self, host: str, process: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> None:
        self.host = host
        self.image = IMAGE
        self._process = process
        self._log = log

    @classmethod
    def start(cls, workdir: Path) -> DockerEngine:
        """Reuse the engine named by SPIFFE_PY_TEST_DOCKER_HOST, else start a private one in workdir.

        Raises:
            EngineUnavailable: with the reason (missing binaries, daemon failed, image import failed).
        """
        if shutil.which("docker") is None:
            raise EngineUnavailable("docker client not installed (apt-get install docker.io)")
        reuse = os.environ.get(REUSE_ENV)
        engine = cls(reuse) if reuse else cls._spawn(workdir)
        try:
            engine._wait_ready()
            engine._ensure_image()
        except EngineUnavailable:
            engine.stop()
            raise
        return engine

    @classmethod
    def _spawn(cls, workdir: Path) -> DockerEngine:
        if shutil.which("dockerd") is None:
            raise EngineUnavailable("dockerd not installed (apt-get install docker.io busybox-static)")
        if os.geteuid() != 0:
            raise EngineUnavailable("starting dockerd needs root (or set SPIFFE_PY_TEST_DOCKER_HOST)")
        sock = workdir / "docker.sock"
        cmd = [
            "dockerd",
            "--storage-driver=vfs",  # works on any filesystem, no overlay support needed
            "--iptables=false",
            "--bridge=none",  # containers use --network none; no host network changes
            f"--host=unix://{sock}",
            f"--data-root={workdir / 'docker-data'}",
            f"--exec-root={workdir / 'exec'}",
            f"--pidfile={workdir / 'docker.pid'}",
        ]
        log = workdir / "dockerd.log"
        with log.open("wb") as out:
            # Own session: the daemon and its containerd can be signalled as one group.
            process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return cls(f"unix://{sock}", process, log)

    def _wait_ready(self) -> None:
        # Monotonic deadline: this is an I/O loop, not logic.
        deadline = time.monotonic() + START_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise EngineUnavailable(f"dockerd exited with {self._process.returncode}: {self._log_tail()}")
            probe = self._docker(["info", "--format", "{{.ServerVersion}}"], check=False, timeout=10)
            if probe.returncode == 0:
                return
            last = probe.stderr.strip()
            time.sleep(0.3)
        raise EngineUnavailable(f"docker engine at {self.host} not ready after {START_TIMEOUT}s: {last}")

    def _ensure_image(self) -> None:
        if self._docker(["image", "inspect", self.image], check=False).returncode == 0:
            return
        busybox = next((Path(p) for p in ("/usr/bin/busybox", "/bin/busybox") if Path(p).exists()), None)
        if busybox is None:
            raise EngineUnavailable("busybox not installed (apt-get install busybox-static)")
        imported = self._docker(["import", "-", self.image], check=False, stdin=busybox_rootfs_tar(busybox))
        # A dynamic busybox would import fine but not run: prove the image works now.
        checked = self._docker(["run", "--rm", "--network", "none", self.image, "true"], check=False)
        if imported.returncode != 0 or checked.returncode != 0:
            raise EngineUnavailable(f"test image {self.image} unusable: {imported.stderr}{checked.stderr}".strip())

    def run(
        self,
        command: Sequence[str],
        *,
        labels: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        binds: Iterable[Bind] = (),
        share: Path | None = None,
        host_python: bool = True,
    ) -> str:
        """Start a detached container running `command`; return its full ID.

        `share` is bind-mounted read-write at the same path (to pass a Unix socket in or out);
        `host_python` adds :func:`host_python_binds` so `sys.executable` runs inside.
        """
        args = ["run", "-d", "--network", "none", "--label", f"{LABEL}=1"]
        for key, value in (labels or {}).items():
            args += ["--label", f"{key}={value}"]
        for key, value in (env or {}).items():
            args += ["--env", f"{key}={value}"]
        mounts = [*(host_python_binds() if host_python else []), *binds]
        if share is not None:
            mounts.append(Bind(share, str(share), read_only=False))
        for bind in mounts:
            args += ["--volume", bind.volume_arg()]
        return self._docker([*args, self.image, *command]).stdout.strip()

    def pid(self, container_id: str) -> int:
        """Host PID of the container's main process (0 if it is not running)."""
        return int(self._docker(["inspect", "--format", "{{.State.Pid}}", container_id]).stdout)

    def exec_detached(self, container_id: str, command: Sequence[str]) -> None:
        """Start `command` inside the running container (``docker exec -d``)."""
        self._docker(["exec", "-d", container_id, *command])

    def restart(self, container_id: str) -> None:
        """Restart the container at once (same ID, new init process and namespaces)."""
        self._docker(["restart", "-t", "0", container_id])

    def wait(self, container_id: str) -> int:
        """Block until the container exits; return its exit code."""
        return int(self._docker(["wait", container_id]).stdout)

    def logs(self, container_id: str) -> str:
        """Combined stdout and stderr of the container."""
        out = self._docker(["logs", container_id])
        return out.stdout + out.stderr

    def remove(self, container_id: str) -> None:
        """Kill and remove the container."""
        self._docker(["rm", "-f", container_id])

    def stop(self) -> None:
        """Remove our containers; stop the daemon if we started it."""
        listed = self._docker(["ps", "-aq", "--filter", f"label={LABEL}"], check=False)
        ids = listed.stdout.split() if listed.returncode == 0 else []
        if ids:
            self._docker(["rm", "-f", *ids], check=False)
        if self._process is None:
            return
        if self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(timeout=10)
        self._process = None

    def _docker(
        self, args: Sequence[str], *, check: bool = True, stdin: bytes | None = None, timeout: float = COMMAND_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DOCKER_HOST": self.host}
        try:
            raw = subprocess.run(
                ["docker", *args], input=stdin or b"", capture_output=True, env=env, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            raw = subprocess.CompletedProcess(args, 124, b"", f"timed out after {timeout}s".encode())
        result = subprocess.CompletedProcess(
            raw.args, raw.returncode, raw.stdout.decode(errors="replace"), raw.stderr.decode(errors="replace")
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args[:2])} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def _log_tail(self) -> str:
        if self._log is None or not self._log.exists():
            return "(no log)"
        return self._log.read_text(errors="replace")[-2000:]
