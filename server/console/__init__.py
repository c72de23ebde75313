"""The web console of spiffe-server (``[console]`` in the config): pages over the admin service."""
