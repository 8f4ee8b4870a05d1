"""What every HTTP client of the adapters shares."""

from __future__ import annotations

import functools
import ssl

import certifi


@functools.cache
def ssl_context() -> ssl.SSLContext:
    """One TLS context per process: loading the CA bundle costs 20-60 ms of CPU, too much to pay per room."""
    return ssl.create_default_context(cafile=certifi.where())
