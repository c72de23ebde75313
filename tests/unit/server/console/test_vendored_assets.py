"""The console's vendored front-end assets match their pins and recorded hashes (no network)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]


def test_vendored_assets_match_the_record() -> None:
    script = ROOT / "scripts" / "vendor_console_assets.py"
    spec = importlib.util.spec_from_file_location("vendor_console_assets", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.check() == 0
    record = json.loads(module.RECORD.read_text())
    assert {name: info["version"] for name, info in record.items()} == {n: v for n, (v, _) in module.PINS.items()}
    assert all(info["integrity"].startswith("sha512-") for info in record.values())


def test_templates_load_no_script_but_the_vendored_and_own_files() -> None:
    templates = ROOT / "server" / "console" / "templates"
    for page in templates.glob("*.html"):
        text = page.read_text()
        assert "<script>" not in text and " on" + "click=" not in text and "style=" not in text, page.name
        for src in (part.split('"')[0] for part in text.split('<script src="')[1:]):
            assert src.startswith("/static/"), (page.name, src)
