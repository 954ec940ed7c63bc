"""The cluster key: one 32-byte random secret that every gateway and worker of a cluster holds,
and that Redis never sees.

Redis holds what the cluster shares (the registry, the credentials), so whoever can read its
data files or its replication stream reads all of that. The cluster key keeps the secret part
out of their reach: secrets and credentials are stored sealed with it (AES-256-GCM), and the
gateway<->worker handshake is authenticated with it. The first gateway makes the key in its
data dir (`cluster.key`, mode 0600); every other host gets a copy by hand (or through
FAASD_CLUSTER_KEY), the way an SSH key is copied, never through Redis.

The file holds the key as hex (what `create` writes) or base64 text. Each use has a key of its
own, derived with HKDF-SHA256 and a label, so a MAC of the transport can never be taken for a
sealed value or the other way round, and the check value stored in Redis (to tell a host that
its copy differs) says nothing about the keys that seal.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import redis.asyncio as aioredis
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from redis.exceptions import RedisError

from faasd_py.errors import FaasdError, Unavailable

__all__ = [
    "CLUSTER_KEY_ENV",
    "KEY_CHECK",
    "KEY_FILE",
    "ClusterKey",
    "ClusterKeyError",
    "ClusterKeyMismatch",
    "call_redis",
    "join_cluster_key",
    "redis_name",
    "write_private",
]

KEY_FILE = "cluster.key"  # its name in the first gateway's --data-dir
CLUSTER_KEY_ENV = "FAASD_CLUSTER_KEY"
KEY_CHECK = "faasd:cluster:key-check"  # the check value of the cluster's key, in Redis

T = TypeVar("T")

_KEY_BYTES = 32
_NONCE_BYTES = 12  # 96 bits: what GCM is made for
_TAG_BYTES = 16


class ClusterKeyError(FaasdError):
    """No usable cluster key: a missing or unreadable file, a file others may read, bad text."""

    status = 500


class ClusterKeyMismatch(ClusterKeyError):
    """This host's cluster key is not the one the cluster uses: sealed data does not open, or
    the check value in Redis differs."""


class ClusterKey:
    """The cluster's shared secret (see the module's docstring). Its repr never shows it."""

    def __init__(self, secret: bytes, source: str = "a cluster key") -> None:
        if len(secret) != _KEY_BYTES:
            raise ClusterKeyError(
                f"{source}: a cluster key is {_KEY_BYTES} bytes, this one is {len(secret)}"
            )
        self.source = source  # where it came from, for messages: a path or the variable
        self._seal = AESGCM(_derive(secret, b"faasd-py cluster seal v1"))
        self._mac_key = _derive(secret, b"faasd-py cluster mac v1")
        self._check = _derive(secret, b"faasd-py cluster check v1")[:16].hex()

    def __repr__(self) -> str:
        return f"ClusterKey(source={self.source!r}, check={self._check!r})"

    # --- where keys come from ------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path) -> ClusterKey:
        """The key in `path`, which only its owner may read."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ClusterKeyError(
                f"no cluster key at {path}: copy {KEY_FILE} from the first gateway's "
                f"--data-dir ({KEY_FILE} there) to {path} and `chmod 600 {path}`, or set "
                f"{CLUSTER_KEY_ENV} to its contents"
            ) from None
        except OSError as exc:
            raise ClusterKeyError(f"cannot read the cluster key {path}: {exc.strerror}") from exc
        with os.fdopen(fd, "rb") as file:
            # Checked on the open file, so the mode is that of what is read.
            if stat.S_IMODE(os.fstat(file.fileno()).st_mode) & 0o077:
                raise ClusterKeyError(
                    f"the cluster key {path} may be read by other users: `chmod 600 {path}` "
                    "(and treat the key as leaked if they could)"
                )
            text = file.read(1024)
        return cls(_parse(text, str(path)), str(path))

    @classmethod
    def create(cls, path: Path) -> ClusterKey:
        """A new random key written to `path` (mode 0600, whole or not at all); a
        ClusterKeyError if `path` exists (a key in use is never replaced)."""
        key = secrets.token_bytes(_KEY_BYTES)
        try:
            write_private(path, key.hex() + "\n", replace=False)
        except FileExistsError:
            raise ClusterKeyError(
                f"{path} exists already: a cluster key is never replaced (secrets sealed with "
                "it would no longer open)"
            ) from None
        except OSError as exc:
            raise ClusterKeyError(f"cannot write the cluster key {path}: {exc}") from exc
        return cls(key, str(path))

    @classmethod
    def from_env_or_file(cls, path: Path) -> ClusterKey:
        """FAASD_CLUSTER_KEY (hex) when it is set, else the key in `path`."""
        text = os.environ.get(CLUSTER_KEY_ENV)
        if text is None:
            return cls.load(path)
        try:
            secret = bytes.fromhex(text.strip())
        except ValueError:
            raise ClusterKeyError(
                f"{CLUSTER_KEY_ENV} is not hex: set it to the {_KEY_BYTES * 2} hex digits of "
                f"the first gateway's {KEY_FILE}"
            ) from None
        return cls(secret, CLUSTER_KEY_ENV)

    # --- uses ----------------------------------------------------------------------------------

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        """`plaintext` encrypted and authenticated: nonce, then ciphertext and tag. `context`
        (what the value is, e.g. a secret's namespace and name) is bound to it, so the sealed
        value opens only under the same context: it cannot be moved to another name."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return nonce + self._seal.encrypt(nonce, plaintext, context)

    def open(self, sealed: bytes, context: bytes) -> bytes:
        """The plaintext of `seal(plaintext, context)`; ClusterKeyMismatch if this key did not
        seal it, or it was sealed for another context, or altered."""
        if len(sealed) < _NONCE_BYTES + _TAG_BYTES:
            raise self._mismatch("it is too short to be sealed data")
        try:
            return self._seal.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], context)
        except InvalidTag:
            raise self._mismatch("it was sealed with another key, or altered") from None

    def mac(self, data: bytes) -> bytes:
        """HMAC-SHA256 of `data` with the key derived for MACs (the transport's handshake)."""
        return hmac.digest(self._mac_key, data, hashlib.sha256)

    def verify_mac(self, data: bytes, tag: bytes) -> bool:
        """Whether `tag` is mac(data), compared in constant time."""
        return hmac.compare_digest(self.mac(data), tag)

    def check_value(self) -> str:
        """A value derived from the key that tells keys apart and reveals nothing of them:
        safe to store in Redis and to print."""
        return self._check

    def _mismatch(self, why: str) -> ClusterKeyMismatch:
        return ClusterKeyMismatch(
            f"sealed data does not open with the cluster key from {self.source} ({why}): the "
            "cluster key does not match the one the cluster uses; copy the first gateway's "
            f"{KEY_FILE} (from its --data-dir) to every gateway and worker"
        )


async def join_cluster_key(
    redis: aioredis.Redis, path: Path, *, create: bool, seconds: float = 5.0
) -> ClusterKey:
    """This host's cluster key (FAASD_CLUSTER_KEY, or the file at `path`), checked against the
    cluster's.

    The first gateway (`create`, and no check value in Redis yet) makes the key file if it is
    missing and stores the key's check value in Redis (SET NX). Any other host must have a copy
    of that key: a missing one, or one whose check value differs from the stored one, is a
    ClusterKeyError that names `path` and says where to copy the key from. A worker (not
    `create`) never makes a key. Redis down or silent for `seconds`: Unavailable.
    """
    store = f"cluster store {redis_name(redis)}"
    stored = _text(await call_redis(redis.get(KEY_CHECK), store, seconds))
    made = create and stored is None and _make_if_missing(path)
    key = ClusterKey.from_env_or_file(path)
    check = key.check_value()
    if stored is None:
        if await call_redis(redis.set(KEY_CHECK, check, nx=True), store, seconds):
            return key
        # Another first gateway stored its check value since: the key is the one it made.
        stored = _text(await call_redis(redis.get(KEY_CHECK), store, seconds))
    if stored is not None and stored != check:
        if made:  # it lost that race and sealed nothing: not left to be taken for the key
            await asyncio.to_thread(path.unlink)
        raise ClusterKeyMismatch(
            f"the cluster key from {key.source} is not the cluster's (its check value "
            f"{check} differs from {stored}, stored in {redis_name(redis)} at {KEY_CHECK}): "
            f"copy {KEY_FILE} from the first gateway's --data-dir to {path} and "
            f"`chmod 600 {path}`"
            + (f", and unset {CLUSTER_KEY_ENV}" if key.source == CLUSTER_KEY_ENV else "")
        )
    return key


def redis_name(redis: aioredis.Redis) -> str:
    """redis://HOST:PORT/DB of a client, for messages (never its password)."""
    kwargs = redis.connection_pool.connection_kwargs
    service = getattr(redis.connection_pool, "service_name", None)
    if service is not None:
        return f"redis+sentinel://.../{service}/{kwargs.get('db', 0)}"
    if "host" in kwargs:
        return f"redis://{kwargs['host']}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return "Redis"


async def call_redis(
    awaitable: Awaitable[T],
    store: str,
    seconds: float,
    unavailable: Callable[[str], Unavailable] | None = None,
) -> T:
    """`awaitable`'s result, or Unavailable naming `store` (e.g. "registry redis://h:6379/0")
    when Redis fails, cannot be reached, or has not answered within `seconds`: a raw redis-py
    exception never reaches a caller. `unavailable(cause)` makes an error of another kind."""
    try:
        async with asyncio.timeout(seconds):
            return await awaitable
    except TimeoutError:  # (before OSError, which it is a kind of)
        cause = f"no answer within {seconds:g}s"
    except RedisError as exc:
        cause = f"{type(exc).__name__}: {exc}"
    except OSError as exc:
        cause = str(exc)
    if unavailable is not None:
        raise unavailable(cause)
    raise Unavailable(f"{store} unavailable: {cause}; retry when Redis is back")


def _make_if_missing(path: Path) -> bool:
    """Whether a new key was written to `path` (not if FAASD_CLUSTER_KEY or `path` is there)."""
    if CLUSTER_KEY_ENV in os.environ or path.exists():
        return False
    try:
        ClusterKey.create(path)
    except ClusterKeyError:
        if path.exists():  # made meanwhile by another gateway of this host: theirs is as good
            return False
        raise
    return True


def _text(value: bytes | str | None) -> str | None:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value


def write_private(path: Path, text: str, *, replace: bool = True) -> None:
    """Write `text` to `path` whole or not at all, mode 0600 from the start: a temporary file
    beside it, synced, then renamed over it (`replace`), or linked to it (not `replace`:
    FileExistsError if it exists)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _derive(secret: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(secret)


def _parse(text: bytes, source: str) -> bytes:
    """The key in a file's text: hex, or base64."""
    stripped = text.strip()
    with contextlib.suppress(ValueError):
        return bytes.fromhex(stripped.decode("ascii"))
    try:
        return base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError):
        raise ClusterKeyError(
            f"{source} holds no cluster key (neither hex nor base64): copy {KEY_FILE} from the "
            "first gateway's --data-dir again"
        ) from None
