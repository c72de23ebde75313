"""Agent halves of node attestation: what the agent sends the server to prove which node it runs on."""
