"""Every error livermore-nb raises, in one tree.

    LivermoreError                  base; ``exit_code`` is what the CLI returns
    ├── ConfigError                 bad options, symbols, timeframes, key files (exit 2)
    ├── UpstreamError               anything the Coinbase API said or failed to say
    │   ├── HTTPStatusError         a non-2xx answer; ``status`` and a short ``detail``
    │   │   ├── BadRequestError     400: never retried
    │   │   ├── AuthError           401/403: the key was rejected (exit 5)
    │   │   ├── ProductNotFound     404: unknown product
    │   │   ├── RateLimited         429: shared cool-down, then retried
    │   │   └── ServerError         5xx: retried
    │   ├── TransportError          timeouts, refused or dropped connections: retried
    │   └── MalformedResponse       a body that is not the documented JSON: retried
    ├── InvalidCandle               a candle that fails validation: never written
    ├── StoreError                  Redis problems
    │   ├── RedisOutOfMemory        over ``maxmemory``: the write was refused whole (exit 4)
    │   ├── RedisAuthError          Redis refused the password or the ACL user (exit 4)
    │   └── RedisUnavailable        cannot reach Redis (exit 4)
    │       └── RedisTimeout        Redis accepted the connection but did not answer in time
    └── CommandNotFound             ``startup``'s COMMAND cannot be executed (exit 127)

aiohttp and redis exceptions are translated into this tree at one boundary each
(``coinbase.py`` and ``store.py``); messages never carry key material.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_NOT_READY = 3
EXIT_REDIS = 4
EXIT_AUTH = 5
EXIT_COMMAND_NOT_FOUND = 127


class LivermoreError(Exception):
    """Base of every livermore-nb error."""

    exit_code = EXIT_NOT_READY


class ConfigError(LivermoreError):
    """Invalid options or configuration; nothing was fetched or written."""

    exit_code = EXIT_USAGE


class UpstreamError(LivermoreError):
    """The Coinbase API (or the way to it) failed."""

    retryable = False


class HTTPStatusError(UpstreamError):
    """A non-2xx HTTP answer from the API."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class BadRequestError(HTTPStatusError):
    """HTTP 400: the request itself is wrong; retrying cannot help."""


class AuthError(HTTPStatusError):
    """HTTP 401/403: the API key was rejected."""

    exit_code = EXIT_AUTH

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(status, detail)
        self.args = (
            f"Coinbase rejected the API key (HTTP {status}: {detail}); check "
            "COINBASE_API_KEY_NAME, the private key and this machine's clock",
        )


class ProductNotFound(HTTPStatusError):
    """HTTP 404: Coinbase does not know the product."""


class RateLimited(HTTPStatusError):
    """HTTP 429: over the rate limit; ``retry_after`` seconds if the server said."""

    retryable = True

    def __init__(self, status: int, detail: str, retry_after: float | None = None) -> None:
        super().__init__(status, detail)
        self.retry_after = retry_after


class ServerError(HTTPStatusError):
    """HTTP 5xx: a transient server failure."""

    retryable = True


class TransportError(UpstreamError):
    """Timeout, refused or dropped connection."""

    retryable = True


class MalformedResponse(UpstreamError):
    """A 2xx body that is not the documented candles JSON."""

    retryable = True


class InvalidCandle(LivermoreError):
    """A candle with non-numeric, negative or inconsistent values, or off its grid."""


class StoreError(LivermoreError):
    """A Redis operation failed."""

    exit_code = EXIT_REDIS


class RedisUnavailable(StoreError):
    """Redis cannot be reached."""


class RedisTimeout(RedisUnavailable):
    """Redis did not answer within the socket timeout (hung or overloaded): not retried."""


class RedisOutOfMemory(StoreError):
    """Redis refused a write because it is over ``maxmemory``; nothing of it was applied."""


class RedisAuthError(StoreError):
    """Redis refused the credentials (NOAUTH, WRONGPASS) or the ACL user's permissions.

    Exit 4 like every Redis problem; the message says which, so a wrong password
    is not mistaken for a network fault.
    """


class CommandNotFound(LivermoreError):
    """The command ``startup`` should start after a ready backfill cannot be executed."""

    exit_code = EXIT_COMMAND_NOT_FOUND


def error_for_status(status: int, detail: str, retry_after: float | None = None) -> HTTPStatusError:
    """Map an HTTP status to the matching error class (the one table for statuses)."""
    if status == 429:
        return RateLimited(status, detail, retry_after)
    if status in (401, 403):
        return AuthError(status, detail)
    if status == 404:
        return ProductNotFound(status, detail)
    if status >= 500:
        return ServerError(status, detail)
    if status == 400:
        return BadRequestError(status, detail)
    return HTTPStatusError(status, detail)
