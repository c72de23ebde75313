"""Runnable examples of spiffe-py; run them all with ``bash examples/run_all.sh`` (README.md: "Try the examples")."""
