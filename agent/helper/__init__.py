"""``spiffe-agent helper``: SVIDs as files for software that does not speak SPIFFE (SPIRE's spiffe-helper).

``config`` parses and validates ``helper.toml`` (pure); ``files`` turns SVIDs into file contents
(pure); ``runner`` is the I/O shell: it follows the Workload API through spiffe_py's client (not
agent internals), writes atomically, and runs or signals the consumer on every rotation.
"""
