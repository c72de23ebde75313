"""Node attestors: prove an agent's identity and produce its agent ID and node selectors."""
