"""``spiffe-broker run --config broker.toml``: the AI credential broker.

The broker finds its agent through ``SPIFFE_ENDPOINT_SOCKET`` or ``workload_api_socket`` in the
config. Exit status 2 for a bad configuration or an unfit secret file (named, never shown).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from spiffe_broker.config import ConfigError, parse_config
from spiffe_broker.secrets import SecretFileError
from spiffe_py._policy import PolicyError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spiffe-broker", description="AI credential broker for SPIFFE workloads")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="serve the broker")
    run.add_argument("--config", required=True, type=Path, help="broker.toml")
    run.add_argument("--log-level", default=None, help="debug, info, warning, error (default: the config's)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``spiffe-broker`` console script."""
    args = _parser().parse_args(argv)
    try:
        text = args.config.read_text(encoding="utf-8")
        cfg = parse_config(text, source=str(args.config))
    except (OSError, UnicodeDecodeError) as err:
        print(f"spiffe-broker: cannot read {args.config}: {err}", file=sys.stderr)
        return 2
    except ConfigError as err:
        print(f"spiffe-broker: {err}", file=sys.stderr)
        return 2
    level = (args.log_level or cfg.log_level).upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # no request lines: paths may carry secrets

    from spiffe_broker.app import run

    try:
        asyncio.run(run(cfg))
    except (SecretFileError, PolicyError) as err:
        print(f"spiffe-broker: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
