"""The generated protobuf code, the CI lock file and the runtime floors agree.

The generated modules refuse to import under a runtime older than the one they were generated
for (protobuf's ValidateProtobufRuntimeVersion, grpcio's GRPC_GENERATED_VERSION check), so the
floors in pyproject.toml must be at least those versions, and the lock that feeds the generator
must pin exactly them.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "spiffe_py" / "_proto"
LOCK = ROOT / "requirements" / "ci.txt"


def _stamps(pattern: str, glob: str) -> set[str]:
    found = {m.group(1) for p in PROTO.rglob(glob) if (m := re.search(pattern, p.read_text()))}
    assert found, f"no generated file matching {glob} carries a version stamp"
    return found


def _floor(name: str) -> Version:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in map(Requirement, deps):
        if dep.name == name:
            floors = [Version(s.version) for s in dep.specifier if s.operator == ">="]
            assert floors, f"{name} has no >= floor in pyproject.toml"
            return max(floors)
    raise AssertionError(f"{name} is not a runtime dependency")


def _lock_pins() -> dict[str, str]:
    return {m.group(1).lower(): m.group(2)
            for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+)", LOCK.read_text(), re.MULTILINE)}


def test_protobuf_floor_covers_the_gencode_version() -> None:
    (gencode,) = _stamps(r"# Protobuf Python Version: (\S+)", "*_pb2.py")
    assert _floor("protobuf") >= Version(gencode)
    assert Version(_lock_pins()["protobuf"]).major == Version(gencode).major


def test_grpcio_floor_and_pins_match_the_generated_stubs() -> None:
    (generated,) = _stamps(r"GRPC_GENERATED_VERSION = '([^']+)'", "*_pb2_grpc.py")
    assert _floor("grpcio") >= Version(generated)
    pins = _lock_pins()
    assert pins["grpcio-tools"] == generated, "regenerate with the pinned grpcio-tools (scripts/genproto.py)"
    assert Version(pins["grpcio"]) >= Version(generated)


def test_lock_pins_every_code_generator_exactly() -> None:
    pins = _lock_pins()
    for name in ("grpcio-tools", "protobuf", "grpclib"):
        assert name in pins, f"{name} is not pinned in {LOCK.name}"


def test_only_the_workload_api_has_grpcio_stubs() -> None:
    stubs = sorted(p.relative_to(PROTO).as_posix() for p in PROTO.rglob("*_pb2_grpc.py"))
    assert stubs == ["workload_pb2_grpc.py"]
