"""``python -m spiffe_server.cli``."""

from spiffe_server.cli import main

raise SystemExit(main())
