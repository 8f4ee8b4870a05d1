"""One exception tree: configuration mistakes, run failures and model failures apart."""

from __future__ import annotations

from moot.scrub import scrub


class MootError(Exception):
    """Root of every error Moot raises on purpose."""


class ConfigError(MootError):
    """A room file, agent or model declaration is wrong; the message says what to change."""


class RunError(MootError):
    """A discussion could not go on (room-level failure)."""


class ModelError(MootError):
    """A model call failed. `retryable` tells the engine whether trying again may help.

    The message is scrubbed here, once for every path: it often quotes a provider, and a provider may echo
    the key it was sent.
    """

    retryable: bool = False

    def __init__(self, message: str, *, model: str = "", status: int | None = None) -> None:
        super().__init__(scrub(message))
        self.model = model
        self.status = status


class ModelUnavailable(ModelError):
    """The model cannot be used as declared (a missing key, an unknown provider): fix the declaration."""


class ModelAuthError(ModelError):
    """The provider refused the credentials: fix the key, retrying will not help."""


class ModelRequestError(ModelError):
    """The provider rejected the request itself (bad model name, bad parameters)."""


class ContextTooLong(ModelRequestError):
    """The prompt does not fit the server's context window; `limit` is the window the server reported.

    Compressing the discussion to `limit` tokens (less the reply's room) and trying again may help.
    """

    def __init__(
        self, message: str, *, model: str = "", status: int | None = None, limit: int | None = None
    ) -> None:
        super().__init__(message, model=model, status=status)
        self.limit = limit


class TransientModelError(ModelError):
    """Rate limits, 5xx, timeouts, dropped connections, streams cut mid-way: worth retrying."""

    retryable = True

    def __init__(
        self, message: str, *, model: str = "", status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, model=model, status=status)
        self.retry_after = retry_after
