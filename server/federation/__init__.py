"""SPIFFE federation: the bundle endpoint this server serves, and the client that fetches foreign bundles.

``endpoint`` serves our bundle; ``relationship`` holds the pure checks; ``client`` fetches one
bundle; ``refresher`` keeps every relationship fresh (docs/federation.md).
"""
