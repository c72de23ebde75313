"""spiffe-server: CA, registration store, node attestation and server APIs."""
