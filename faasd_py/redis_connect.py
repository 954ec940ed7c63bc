"""One way to open a Redis client for the whole project, from a URL a user gives.

Accepted forms (the message of a refused URL lists them too):

    redis://[[user]:password@]host[:port][/db]                   plain TCP
    rediss://[[user]:password@]host[:port][/db]                  TLS (ssl_* options below)
    unix:///path/to/socket[?db=N]                                a Unix socket
    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/SERVICE[/db]
    rediss+sentinel://...                                        the same, TLS to all of them

Any of them takes redis-py's usual query options (socket_keepalive, client_name, and with TLS
ssl_cert_reqs, ssl_ca_certs, ssl_certfile, ssl_keyfile, ...); an unknown one is refused here
rather than failing at the first connection. A Sentinel URL's user and password are the data
servers' (AUTH); `?sentinel_password=` (and `sentinel_username=`) authenticate to the Sentinels
themselves. Sentinels default to port 26379.

Through Sentinel the client is redis-py's `Sentinel(...).master_for(SERVICE)`: every new
connection asks the Sentinels for the current primary, so after a failover the client finds
the promoted replica by itself; calls in between fail with redis-py's ConnectionError (no
primary known, or the old one gone), never hang past the socket timeout.

redis-py is imported by `connect` only: modules that merely check a URL's scheme
(REDIS_SCHEMES) stay cheap to import.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from faasd_py.errors import BadRequest

if TYPE_CHECKING:
    import redis.asyncio as aioredis

# The schemes connect() opens; open_store, open_queue and the CLI check URLs against them.
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
REDIS_SCHEMES = ("redis", "rediss", "unix", *SENTINEL_SCHEMES)
DEFAULT_SENTINEL_PORT = 26379

FORMS = (
    "redis://[[user]:password@]host[:port][/db], rediss://... (TLS), unix:///path/to/socket"
    "[?db=N], or redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/SERVICE[/db]"
    "[?sentinel_password=...] (rediss+sentinel:// for TLS)"
)

# Query options that authenticate to the Sentinels, not to the data servers.
_SENTINEL_OPTIONS = ("sentinel_password", "sentinel_username")
# Query options (besides redis-py's typed ones) a URL may carry; ssl_* need a TLS scheme.
_OPTIONS = ("client_name", "username", "password", "lib_name", "lib_version")
# Query values hidden by redact().
_SECRET_QUERY = re.compile(r"((?:^|[?&])(?:sentinel_)?password=)[^&#]*")


class BadRedisURL(BadRequest, ValueError):
    """A Redis URL that connect() cannot open. Also a ValueError, as open_store and open_queue
    promise for a bad URL."""

    def __init__(self, url: str, why: str) -> None:
        super().__init__(
            f"{redact(url)!r} is not a Redis URL faasd-py can use: {why}; expected {FORMS}"
        )
        self.url = redact(url)


@dataclass(frozen=True)
class RedisTarget:
    """What a URL names: one server (`connection` holds redis-py's connection arguments, its
    connection class among them), or a Sentinel service (`sentinels` non-empty)."""

    connection: Mapping[str, Any]
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""
    sentinel_auth: Mapping[str, str] = field(default_factory=dict)
    tls: bool = False


def redact(url: str) -> str:
    """The URL without its password (nor the Sentinels' password), for messages and names.
    Never raises, whatever the URL."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hosts}"
    tail = _SECRET_QUERY.sub(r"\1***", tail)
    return f"{scheme}://{netloc}{tail}"


def parse(url: str) -> RedisTarget:
    """What `url` names, without connecting. BadRedisURL naming what is wrong."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in REDIS_SCHEMES:
        why = f"unknown scheme {scheme!r}" if scheme else "no scheme (such as redis://)"
        raise BadRedisURL(url, why)
    try:
        if scheme in SENTINEL_SCHEMES:
            return _parse_sentinel(url, tls=scheme == "rediss+sentinel")
        return _parse_server(url, tls=scheme == "rediss")
    except BadRedisURL:
        raise
    except ValueError as exc:  # a port that is no number, an option's bad value
        raise BadRedisURL(url, str(exc)) from None


def _parse_server(url: str, *, tls: bool) -> RedisTarget:
    from redis.asyncio.connection import parse_url

    parts = urlsplit(url)
    if parts.scheme == "unix" and not parts.path:
        raise BadRedisURL(url, "no socket path")
    if parts.scheme != "unix":
        if not parts.hostname:
            raise BadRedisURL(url, "no host")
        _ = parts.port  # ValueError for a port that is no number or out of range
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise BadRedisURL(url, f"the database must be a number, got {db!r}")
    options = parse_url(url)
    _check_options(url, options, tls=tls, sentinel=False)
    return RedisTarget(connection=options, tls=tls)


def _parse_sentinel(url: str, *, tls: bool) -> RedisTarget:
    from redis.asyncio.connection import parse_url

    rest = url.split("://", 1)[1]
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    sentinels = tuple(_sentinel_address(url, host) for host in hosts.split(","))
    names = [unquote(p) for p in path.split("/") if p]
    if not names:
        raise BadRedisURL(url, "no service name (the name Sentinels monitor the primary under)")
    if len(names) > 2 or (len(names) == 2 and not names[1].isdigit()):
        raise BadRedisURL(url, f"expected /SERVICE or /SERVICE/db after the hosts, got /{path}")
    # Typed query options as redis-py reads them for its own URLs.
    options: dict[str, Any] = dict(parse_url(f"redis://?{query}"))
    auth = {name: str(options.pop(name)) for name in _SENTINEL_OPTIONS if name in options}
    if at:
        user, colon, password = userinfo.partition(":")
        if user:
            options["username"] = unquote(user)
        if colon:
            options["password"] = unquote(password)
    if len(names) == 2:
        options["db"] = int(names[1])
    _check_options(url, options, tls=tls, sentinel=True)
    return RedisTarget(
        connection=options, sentinels=sentinels, service=names[0], sentinel_auth=auth, tls=tls
    )


def _sentinel_address(url: str, host: str) -> tuple[str, int]:
    parts = urlsplit(f"//{host}")
    if not parts.hostname:
        raise BadRedisURL(url, f"a Sentinel without a host in {host!r}")
    return parts.hostname, parts.port or DEFAULT_SENTINEL_PORT


def _check_options(url: str, options: Mapping[str, Any], *, tls: bool, sentinel: bool) -> None:
    allowed = _allowed_options()
    for name in options:
        if name in ("host", "port", "path", "connection_class"):
            continue
        if name.startswith("ssl_") and not tls:
            raise BadRedisURL(url, f"option {name!r} needs TLS (rediss:// or rediss+sentinel://)")
        if name not in allowed and not (sentinel and name in _SENTINEL_OPTIONS):
            raise BadRedisURL(url, f"unknown option {name!r}")


@cache
def _allowed_options() -> frozenset[str]:
    """redis-py's typed URL options, the TLS connection's ssl_* arguments, and _OPTIONS."""
    import inspect

    from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS, SSLConnection

    ssl = set(inspect.signature(SSLConnection.__init__).parameters)
    return frozenset(
        {*URL_QUERY_ARGUMENT_PARSERS, *(n for n in ssl if n.startswith("ssl_")), *_OPTIONS}
    )


def connect(
    url: str,
    *,
    timeout: float,
    connect_timeout: float = 2.0,
    max_connections: int | None = None,
    blocking: bool = False,
) -> aioredis.Redis:
    """A client of the Redis `url` names (see the module's docstring); nothing connects until
    its first command. Each socket operation is bounded by `timeout` and each connection
    attempt by `connect_timeout` (at most `timeout`); a failed command is retried once, quickly,
    which covers a connection Redis closed while idle without delaying the error a caller gets
    when Redis is down. `blocking`: at most `max_connections` connections, and a command waits
    up to `timeout` for a free one (ConnectionError after that) instead of failing at once.
    BadRedisURL (a BadRequest and a ValueError) for a URL it cannot open."""
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff

    target = parse(url)
    sockets: dict[str, Any] = {
        "socket_connect_timeout": min(connect_timeout, timeout),
        "socket_timeout": timeout,
    }
    kwargs: dict[str, Any] = {
        **sockets,
        "retry": Retry(ExponentialBackoff(cap=0.1, base=0.01), 1),
        **target.connection,  # the URL's own options win, as in redis-py's from_url
    }
    pool: dict[str, Any] = {}
    if max_connections is not None:
        pool["max_connections"] = max_connections
    if blocking:
        pool["timeout"] = timeout
    pool.update({k: kwargs.pop(k) for k in ("max_connections", "timeout") if k in kwargs})
    if not target.sentinels:
        cls = aioredis.BlockingConnectionPool if blocking else aioredis.ConnectionPool
        return aioredis.Redis.from_pool(cls(**kwargs, **pool))
    from redis.asyncio.sentinel import Sentinel

    ssl = {k: v for k, v in kwargs.items() if k.startswith("ssl_")}
    if target.tls:
        # SentinelConnectionPool picks its TLS connection class from `ssl`.
        kwargs["ssl"] = True
    sentinel_kwargs: dict[str, Any] = {
        **sockets,
        **({"ssl": True, **ssl} if target.tls else {}),
        **{k.removeprefix("sentinel_"): v for k, v in target.sentinel_auth.items()},
    }
    manager = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs, **kwargs)
    redis_class, pool_class = _sentinel_classes(blocking)
    client: aioredis.Redis = manager.master_for(
        target.service, redis_class=redis_class, connection_pool_class=pool_class, **pool
    )
    return client


@cache
def _sentinel_classes(blocking: bool) -> tuple[type[Any], type[Any]]:
    """The client class that closes its Sentinel connections too, and the pool class
    (blocking or not) of master_for. Defined on first use, so that redis-py loads lazily."""
    import redis.asyncio as aioredis
    from redis.asyncio.sentinel import SentinelConnectionPool

    class SentinelRedis(aioredis.Redis):
        """master_for's client; closing it closes the connections to the Sentinels as well."""

        async def aclose(self, close_connection_pool: bool | None = None) -> None:
            await super().aclose(close_connection_pool)
            manager = getattr(self.connection_pool, "sentinel_manager", None)
            if manager is not None:
                await manager.aclose()

    class BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
        """Sentinel's pool with BlockingConnectionPool's bound: callers wait for a connection
        rather than fail (redis-py's asyncio has no such class of its own)."""

    return SentinelRedis, (BlockingSentinelPool if blocking else SentinelConnectionPool)
