"""Regenerate the checked-in protobuf and gRPC code under spiffe_py/_proto.

Usage: python scripts/genproto.py [--check] [--any-toolchain]

The SPIFFE workload.proto has no package, so its messages are top-level
symbols. Other libraries (py-spiffe among them) register the same symbols in
protobuf's default descriptor pool, so our generated modules are rewritten to
use a private pool (spiffe_py/_proto/_pool.py) and can live beside them in one
process. --check regenerates into a temporary directory and fails if the
checked-in files differ. Both refuse to run unless the installed generators are exactly
the versions pinned in requirements/ci.txt.
"""

from __future__ import annotations

import filecmp
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT_PKG = "spiffe_py/_proto"

# workload.proto is compiled under the virtual path spiffe_py/_proto/ so the
# generated module lands in our package; the spiffe-py server protos keep
# their own package path (spiffepy/server/v1) and are moved under _proto/.
WORKLOAD = "workload.proto"
SERVER_PROTOS = ["types.proto", "agent.proto", "admin.proto"]
# served on the agent's Workload API socket beside the Workload API (grpclib), read by spiffe_py
AGENT_PROTOS = ["spiffepy/agent/v1/revocations.proto"]

INIT_TEXT = '"""Generated protobuf and gRPC modules. Regenerate with scripts/genproto.py."""\n'
# The generated files are a pure function of the protos and of these exact versions, pinned in
# the CI lock file (refresh: see the README). grpclib provides the protoc-gen-grpclib_python plugin.
LOCK = ROOT / "requirements" / "ci.txt"
TOOLCHAIN = ("grpcio-tools", "protobuf", "grpclib")

POOL_IMPORT = "from spiffe_py._proto._pool import POOL as _POOL\n"


def _run_protoc(out: Path, include: str, files: list[str], *, grpcio_stubs: bool) -> None:
    plugin = Path(sys.executable).parent / "protoc-gen-grpclib_python"
    args = [
        sys.executable, "-m", "grpc_tools.protoc",
        f"--plugin=protoc-gen-grpclib_python={plugin}",
        f"-I{include}",
        f"--python_out={out}", f"--pyi_out={out}", f"--grpclib_python_out={out}",
        *([f"--grpc_python_out={out}"] if grpcio_stubs else []),
        *files,
    ]
    subprocess.run(args, check=True, cwd=ROOT)


def _protoc(out: Path) -> None:
    # grpcio stubs only for the Workload API: the workload-side client is grpcio, while our own
    # protos are served and called with grpclib alone.
    _run_protoc(out, f"{OUT_PKG}={PROTOS / 'spiffe'}", [f"{OUT_PKG}/{WORKLOAD}"], grpcio_stubs=True)
    server = [f"spiffepy/server/v1/{f}" for f in SERVER_PROTOS if (PROTOS / "spiffepy/server/v1" / f).exists()]
    agent = [f for f in AGENT_PROTOS if (PROTOS / f).exists()]
    if server or agent:
        _run_protoc(out, str(PROTOS), server + agent, grpcio_stubs=False)
        shutil.move(str(out / "spiffepy"), str(out / OUT_PKG / "spiffepy"))


def _rewrite(out: Path) -> None:
    for path in sorted((out / OUT_PKG).rglob("*_pb2.py")):
        text = path.read_text()
        text = text.replace("_descriptor_pool.Default().AddSerializedFile", "_POOL.AddSerializedFile")
        text = text.replace("# @@protoc_insertion_point(imports)\n",
                            "# @@protoc_insertion_point(imports)\n" + POOL_IMPORT, 1)
        path.write_text(text)
    for path in sorted([*(out / OUT_PKG).rglob("*.py"), *(out / OUT_PKG).rglob("*.pyi")]):
        text = path.read_text()
        # Point module references (never wire names such as /spiffepy.server.v1.AgentAPI/...
        # or the serialized descriptors) at the package the modules now live in.
        lines = text.splitlines(keepends=True)
        text = "".join(
            line if "AddSerializedFile(" in line else
            re.sub(r"\bspiffepy\.(server|agent)\.v1(?=\.\w+_pb2\b| import )", r"spiffe_py._proto.spiffepy.\1.v1", line)
            for line in lines)
        path.write_text(text)
    for d in [p for p in (out / OUT_PKG).rglob("*") if p.is_dir()] + [out / OUT_PKG]:
        (d / "__init__.py").write_text(INIT_TEXT)


def generate(out: Path) -> None:
    (out / OUT_PKG).mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / OUT_PKG / "_pool.py", out / OUT_PKG / "_pool.py")
    _protoc(out)
    _rewrite(out)


def _generated(base: Path) -> set[str]:
    return {str(p.relative_to(base)) for p in (base / OUT_PKG).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def _pinned_toolchain_mismatches() -> list[str]:
    """Installed code generators that differ from their exact pins in the CI lock file."""
    pins: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", line)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    wrong = []
    for name in TOOLCHAIN:
        want = pins.get(name)
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = "not installed"
        if want is None:
            wrong.append(f"{name}: no exact pin in {LOCK.relative_to(ROOT)}")
        elif have != want:
            wrong.append(f"{name}: {have} installed, {want} pinned")
    return wrong


def main() -> int:
    check = "--check" in sys.argv[1:]
    # --any-toolchain: for scripts/check_latest.sh, which reports what newer generators would change.
    wrong = [] if "--any-toolchain" in sys.argv[1:] else _pinned_toolchain_mismatches()
    if wrong:
        print(f"the code generators differ from {LOCK.relative_to(ROOT)}; install them with:\n"
              f"  pip install -c {LOCK.relative_to(ROOT)} -e '.[test]'", file=sys.stderr)
        for w in wrong:
            print(f"  {w}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out)
        fresh = _generated(out)
        if check:
            current = _generated(ROOT)
            stale = sorted(f for f in fresh | current
                           if f not in fresh or f not in current
                           or not filecmp.cmp(out / f, ROOT / f, shallow=False))
            if stale:
                print("generated protobuf code is stale; run: python scripts/genproto.py", file=sys.stderr)
                for f in stale:
                    print(f"  {f}", file=sys.stderr)
                return 1
            print("generated protobuf code is up to date")
            return 0
        for f in sorted(fresh):
            dest = ROOT / f
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(out / f, dest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
