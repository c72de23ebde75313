"""Vendor the web console's front-end assets from the npm registry, at exact pinned versions.

Usage: python scripts/vendor_console_assets.py [--check]

`npm pack` fetches each pinned package tarball (nothing is installed, no package scripts run), the
files the console serves are copied to server/console/static/vendor/, and VENDORED.json records
each package's version, the registry's integrity string and the SHA-256 of every copied file.
--check re-hashes the committed files against VENDORED.json (no network). The console never loads
anything from a CDN.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "server" / "console" / "static" / "vendor"
RECORD = VENDOR / "VENDORED.json"

# package -> (exact version, {file in the tarball: name under static/vendor/})
PINS: dict[str, tuple[str, dict[str, str]]] = {
    "htmx.org": ("2.0.11", {"package/dist/htmx.min.js": "htmx.min.js"}),
    "uplot": ("1.6.32", {"package/dist/uPlot.iife.min.js": "uPlot.iife.min.js",
                         "package/dist/uPlot.min.css": "uPlot.min.css"}),
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def vendor() -> None:
    VENDOR.mkdir(parents=True, exist_ok=True)
    record: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (version, files) in PINS.items():
            out = subprocess.run(["npm", "pack", f"{name}@{version}", "--json", "--ignore-scripts",
                                  "--pack-destination", tmp], check=True, capture_output=True, text=True).stdout
            info = json.loads(out)[0]
            if info["version"] != version:
                sys.exit(f"{name}: npm returned {info['version']}, pinned {version}")
            with tarfile.open(Path(tmp) / info["filename"]) as tar:
                for member, target in files.items():
                    data = tar.extractfile(member)
                    if data is None:
                        sys.exit(f"{name}: {member} is not a file in the tarball")
                    (VENDOR / target).write_bytes(data.read())
            record[name] = {"version": version, "integrity": info["integrity"],
                            "files": {t: _sha256(VENDOR / t) for t in files.values()}}
    RECORD.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(f"vendored {', '.join(f'{n}@{v}' for n, (v, _) in PINS.items())} into {VENDOR.relative_to(ROOT)}")


def check() -> int:
    record = json.loads(RECORD.read_text())
    bad = [f"{name}: {file}" for name, (version, files) in PINS.items()
           for file in files.values()
           if record.get(name, {}).get("version") != version
           or record[name]["files"].get(file) != _sha256(VENDOR / file)]
    for item in bad:
        print(f"vendored asset differs from VENDORED.json or the pin: {item}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(check() if "--check" in sys.argv[1:] else vendor())
