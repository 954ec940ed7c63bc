"""One small exception tree for the whole project.

Each family maps to one HTTP status (the gateway answers with it) and reads as one CLI message.
The message always says what went wrong and, where it can, what to do about it.
"""

from __future__ import annotations


class FaasdError(Exception):
    """Base of every error that faasd-py reports to a user."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(FaasdError):
    """Malformed input: a spec, a JSON body, a query parameter."""

    status = 400


class SpecError(BadRequest):
    """A function spec that does not validate; the message names the field."""

    def __init__(self, field: str, expected: str) -> None:
        super().__init__(f"{field}: {expected}")
        self.field = field


class NotFound(FaasdError):
    status = 404


class Conflict(FaasdError):
    """The request clashes with what exists: a namespace that still holds functions, a name
    taken."""

    status = 409


class Unauthorized(FaasdError):
    status = 401


class PayloadTooLarge(FaasdError):
    status = 413


class Overloaded(FaasdError):
    """Too many invocations queued for a function; the caller should retry later."""

    status = 429

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FunctionFailed(FaasdError):
    """The handler raised: its type and message go back to the caller."""

    status = 500


class InstanceCrashed(FaasdError):
    """The instance running the invocation died (exited, killed, out of memory)."""

    status = 502


class Unavailable(FaasdError):
    """The platform cannot take the invocation now: shutting down, function being removed."""

    status = 503


class InvocationTimeout(FaasdError):
    status = 504


class NativeUnavailable(FaasdError):
    """A feature needs the compiled shim, and this install runs on the Python fallback."""

    status = 501


class StorageQuotaExceeded(FaasdError):
    """A write to `context.storage` would take the app over its quota of bytes or keys; nothing
    was written. 507 Insufficient Storage when the handler lets it through: the request was
    fine, the app's space is full. The message names the quota and how to raise it."""

    status = 507

    def __init__(self, message: str, quota: str, limit: int) -> None:
        super().__init__(message)
        self.quota = quota  # "bytes" or "keys"
        self.limit = limit


class StorageUnavailable(Unavailable):
    """The backing store of `context.storage` cannot be reached or failed: nothing was read from
    a cache in its place (a read is never served without the store's current version)."""

    def __init__(self, store: str, cause: str) -> None:
        super().__init__(f"storage unavailable ({store}): {cause}; retry when it is back")
        self.store = store
        self.cause = cause
