"""Workload attestation: selectors for the process behind a Workload API connection."""
