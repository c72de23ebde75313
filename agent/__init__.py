"""spiffe-agent: node attestation, sync, SVID cache and the Workload API."""
