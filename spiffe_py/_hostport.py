"""``HOST[:PORT]`` addresses of a server, as the agent's ``--server-address`` and the broker's
``server_address`` take them::

    split_host_port("[::1]:8081", default_port=None)      # ("::1", 8081)
    split_host_port("spire.internal", default_port=8081)  # ("spire.internal", 8081)
"""

from __future__ import annotations

MAX_HOST_LENGTH = 253  # the longest DNS name


def split_host_port(text: str, *, default_port: int | None) -> tuple[str, int]:
    """(host, port) of ``HOST[:PORT]`` (``[V6]:PORT``, or a bare IPv6 address); ``default_port`` when none.

    Raises:
        ValueError: an empty or over-long host, stray brackets, whitespace, ``/`` or ``@``, a bad
            port, or no port when ``default_port`` is None.
    """
    host, port = text, "" if default_port is None else str(default_port)
    if text.startswith("["):
        inner, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError("stray brackets")
        host, port = inner, rest[1:] if rest else port
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    if (not host or len(host) > MAX_HOST_LENGTH or any(c.isspace() or c in "[]/@" for c in host)
            or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536):
        raise ValueError("not HOST:PORT")
    return host, int(port)
