"""A JWT-SVID in place of an API key; run: ``python -m examples.jwt_instead_of_api_key``."""
