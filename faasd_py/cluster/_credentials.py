"""Credentials for /system/* that every gateway of a cluster accepts.

The first gateway to start makes them and stores them in Redis, sealed with the cluster key
(SET NX: two first gateways at once agree on one); every other gateway reads them. Each writes
them under its own credentials dir, as `faasd-py up` does, so the CLI on any gateway's host
finds them where it always has. The cluster's credentials win over what a dir held before.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from pathlib import Path

import redis.asyncio as aioredis

from faasd_py.cluster._keys import ClusterKey, call_redis, redis_name, write_private
from faasd_py.gateway._auth import PASSWORD_FILE, USER_FILE, Credentials
from faasd_py.modes import private_dir

__all__ = ["CREDENTIALS_KEY", "cluster_credentials"]

logger = logging.getLogger(__name__)

CREDENTIALS_KEY = "faasd:cluster:credentials"  # the sealed credentials, in Redis
_CONTEXT = CREDENTIALS_KEY.encode()  # what they are sealed as: they open under no other name


async def cluster_credentials(
    redis: aioredis.Redis, key: ClusterKey, credentials_dir: Path, *, seconds: float = 5.0
) -> tuple[Credentials, bool]:
    """The cluster's credentials, written to `credentials_dir` (files of mode 0600), and
    whether this call made them. A gateway that finds credentials in its dir and none in the
    cluster offers its own (the CLI on its host knows them already); else new ones, user admin
    and a random password. Redis down or silent for `seconds`: Unavailable.
    """
    store = f"cluster store {redis_name(redis)}"
    local = _read(credentials_dir)
    offered = local or Credentials("admin", secrets.token_urlsafe(24))
    plaintext = json.dumps({"user": offered.user, "password": offered.password}).encode()
    # base64: read back the same whether or not the client decodes responses.
    sealed = base64.b64encode(key.seal(plaintext, _CONTEXT))
    created = bool(await call_redis(redis.set(CREDENTIALS_KEY, sealed, nx=True), store, seconds))
    if created:
        credentials = offered
    else:
        stored = await call_redis(redis.get(CREDENTIALS_KEY), store, seconds)
        if stored is None:  # removed by hand between the two calls: offer them again
            return await cluster_credentials(redis, key, credentials_dir, seconds=seconds)
        opened = json.loads(key.open(base64.b64decode(stored), _CONTEXT))
        credentials = Credentials(opened["user"], opened["password"])
    if local != credentials:
        if local is not None:
            logger.warning(
                "the credentials in %s differ from the cluster's: replaced by the cluster's "
                "(every gateway of the cluster accepts the same ones)",
                credentials_dir,
            )
        _write(credentials_dir, credentials)
    return credentials, created


def _read(directory: Path) -> Credentials | None:
    user, password = directory / USER_FILE, directory / PASSWORD_FILE
    if not (user.exists() and password.exists()):
        return None
    return Credentials(user.read_text().strip(), password.read_text().strip())


def _write(directory: Path, credentials: Credentials) -> None:
    """The files `faasd-py up` writes (gateway.load_or_create_credentials), each replaced
    whole."""
    private_dir(directory)
    write_private(directory / USER_FILE, credentials.user + "\n")
    write_private(directory / PASSWORD_FILE, credentials.password + "\n")
