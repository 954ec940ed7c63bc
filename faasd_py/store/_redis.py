"""The registry on Redis: what every gateway and worker of a cluster shares.

Layout (every key under `faasd:registry:`):

    functions             hash ref -> the spec's deployment JSON
    created               hash ref -> creation time (seconds since the epoch)
    replicas              hash ref -> scale-function's replicas (absent: never scaled)
    namespaces            hash name -> JSON {labels, annotations}
    secrets:<namespace>   hash name -> the value sealed with the cluster key, base64
    policy                hash app -> the keep-alive policy's state (JSON text)
    cache-stats           hash app -> the Faa$T cache's access statistics (JSON text)

A function is three fields, so that keeping its creation time and replicas on a replace needs
no read: a put is HSET of the spec and HSETNX of the time, in one script. Every write that must
see what is there (create only if absent, replace only if present, a function deleted with its
time and replicas) is one Lua script, so it is atomic however many gateways write at once, and
the script publishes the change itself, only when something changed.

Secrets are sealed (faasd_py.cluster.ClusterKey: AES-256-GCM, the namespace and name as
associated data): Redis's data files, its replicas and whoever reads them hold only ciphertext,
and a sealed value copied under another name does not open.

The default namespace always exists: it is not stored until its labels are set, and reads
answer as if it were.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import redis.asyncio as aioredis

from faasd_py.cluster._keys import ClusterKey, call_redis
from faasd_py.spec import DEFAULT_NAMESPACE, FunctionSpec, parse_deployment, split_ref
from faasd_py.store._registry import Namespace, StoredFunction

T = TypeVar("T")

CHANGES = "faasd:registry:changes"  # the channel of change messages

_PREFIX = "faasd:registry:"
_FUNCTIONS = _PREFIX + "functions"
_CREATED = _PREFIX + "created"
_REPLICAS = _PREFIX + "replicas"
_NAMESPACES = _PREFIX + "namespaces"
_POLICY = _PREFIX + "policy"
_CACHE_STATS = _PREFIX + "cache-stats"

# KEYS: functions, created. ARGV: ref, spec JSON, now, message.
_PUT_FUNCTION = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[3])
redis.call('PUBLISH', 'faasd:registry:changes', ARGV[4])
return 1
"""

# KEYS: functions, created, replicas. ARGV: ref, message.
_DELETE_FUNCTION = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('PUBLISH', 'faasd:registry:changes', ARGV[2])
return 1
"""

# Set a field only if KEYS[1] (the functions, a namespace's secrets, the namespaces) has the
# field ARGV[1]; or, with ARGV[4] = "create", only if it has not. KEYS: the hash to test, the
# hash to write. ARGV: field, value, message, mode.
_SET_FIELD = """
local exists = redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1
if exists == (ARGV[4] == 'create') then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PUBLISH', 'faasd:registry:changes', ARGV[3])
return 1
"""

# KEYS: the hash. ARGV: field, message.
_DELETE_FIELD = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('PUBLISH', 'faasd:registry:changes', ARGV[2])
return 1
"""

# KEYS: namespaces, the namespace's secrets. ARGV: name, message, 1 if it is the default
# (which always exists, so removing it only clears its labels and secrets).
_DELETE_NAMESPACE = """
local removed = redis.call('HDEL', KEYS[1], ARGV[1]) + redis.call('DEL', KEYS[2])
if removed > 0 then redis.call('PUBLISH', 'faasd:registry:changes', ARGV[2]) end
if removed > 0 or ARGV[3] == '1' then return 1 end
return 0
"""


class RedisRegistry:
    """The Registry (faasd_py.store.Registry) of a cluster, with the worker's policy states and
    the caches' access statistics (see the module's docstring for the layout).

    Every change to a function, secret or namespace is published on the channel
    `faasd:registry:changes` (CHANGES) as JSON `{"kind": "function" | "secret" | "namespace",
    "namespace": ..., "name": ...}` by the script that made it, so gateways and workers that
    cache what they read can drop what changed. A message may be missed (pub/sub holds none
    for a subscriber that is reconnecting): a cache should also expire by itself.

    Redis down, failing, or silent for `timeout` seconds: every method raises Unavailable (503)
    naming the registry by `name` (the Redis URL without its password).
    """

    def __init__(
        self, redis: aioredis.Redis, key: ClusterKey, *, name: str, timeout: float = 5.0
    ) -> None:
        self._redis = redis
        self._key = key
        self._name = f"registry {name}"
        self._timeout = timeout
        self._put_function = redis.register_script(_PUT_FUNCTION)
        self._delete_function = redis.register_script(_DELETE_FUNCTION)
        self._set_field = redis.register_script(_SET_FIELD)
        self._delete_field = redis.register_script(_DELETE_FIELD)
        self._delete_namespace = redis.register_script(_DELETE_NAMESPACE)

    @property
    def name(self) -> str:
        return self._name

    async def _call(self, awaitable: Awaitable[T]) -> T:
        return await call_redis(awaitable, self._name, self._timeout)

    # --- functions -----------------------------------------------------------------------------

    async def put_function(self, spec: FunctionSpec) -> None:
        message = _message("function", spec.namespace, spec.service)
        spec_json = json.dumps(spec.to_json())
        args = [spec.ref, spec_json, repr(time.time()), message]
        await self._call(self._put_function(keys=[_FUNCTIONS, _CREATED], args=args))

    async def get_function(self, ref: str) -> StoredFunction | None:
        # One MULTI: the three fields as one snapshot, never half of a concurrent write.
        pipe = self._redis.pipeline(transaction=True)
        for hash_key in (_FUNCTIONS, _CREATED, _REPLICAS):
            pipe.hget(hash_key, ref)
        spec, created, replicas = await self._call(pipe.execute())
        return None if spec is None else _stored(spec, created, replicas)

    async def list_functions(self, namespace: str | None = None) -> list[StoredFunction]:
        pipe = self._redis.pipeline(transaction=True)
        for hash_key in (_FUNCTIONS, _CREATED, _REPLICAS):
            pipe.hgetall(hash_key)
        specs, created, replicas = await self._call(pipe.execute())
        created, replicas = _text_keys(created), _text_keys(replicas)
        stored = [
            _stored(spec, created.get(ref), replicas.get(ref))
            for ref, spec in sorted(_text_keys(specs).items())
        ]
        return [s for s in stored if namespace is None or s.spec.namespace == namespace]

    async def delete_function(self, ref: str) -> bool:
        name, namespace = split_ref(ref)
        keys = [_FUNCTIONS, _CREATED, _REPLICAS]
        args = [ref, _message("function", namespace, name)]
        return bool(await self._call(self._delete_function(keys=keys, args=args)))

    async def set_replicas(self, ref: str, replicas: int) -> bool:
        name, namespace = split_ref(ref)
        args: list[str | int] = [ref, replicas, _message("function", namespace, name), "replace"]
        return bool(await self._call(self._set_field(keys=[_FUNCTIONS, _REPLICAS], args=args)))

    # --- secrets -------------------------------------------------------------------------------

    async def put_secret(self, namespace: str, name: str, value: bytes, *, create: bool) -> bool:
        sealed = base64.b64encode(self._key.seal(value, _secret_context(namespace, name)))
        secrets = _secrets(namespace)
        mode = "create" if create else "replace"
        args: list[str | bytes] = [name, sealed, _message("secret", namespace, name), mode]
        return bool(await self._call(self._set_field(keys=[secrets, secrets], args=args)))

    async def get_secret(self, namespace: str, name: str) -> bytes | None:
        sealed = await self._call(self._redis.hget(_secrets(namespace), name))
        if sealed is None:
            return None
        return self._key.open(base64.b64decode(sealed), _secret_context(namespace, name))

    async def list_secrets(self, namespace: str) -> list[str]:
        names = await self._call(self._redis.hkeys(_secrets(namespace)))
        return sorted(_text(name) for name in names)

    async def delete_secret(self, namespace: str, name: str) -> bool:
        args = [name, _message("secret", namespace, name)]
        return bool(await self._call(self._delete_field(keys=[_secrets(namespace)], args=args)))

    # --- namespaces ----------------------------------------------------------------------------

    async def get_namespace(self, name: str) -> Namespace | None:
        stored = await self._call(self._redis.hget(_NAMESPACES, name))
        if stored is None:
            return Namespace(DEFAULT_NAMESPACE) if name == DEFAULT_NAMESPACE else None
        return _namespace(name, stored)

    async def list_namespaces(self) -> list[Namespace]:
        stored = _text_keys(await self._call(self._redis.hgetall(_NAMESPACES)))
        namespaces = {name: _namespace(name, value) for name, value in stored.items()}
        namespaces.setdefault(DEFAULT_NAMESPACE, Namespace(DEFAULT_NAMESPACE))
        return [namespaces[name] for name in sorted(namespaces)]

    async def put_namespace(self, namespace: Namespace, *, create: bool) -> bool:
        value = json.dumps(
            {"labels": dict(namespace.labels), "annotations": dict(namespace.annotations)}
        )
        message = _message("namespace", namespace.name, namespace.name)
        if namespace.name != DEFAULT_NAMESPACE:
            args = [namespace.name, value, message, "create" if create else "replace"]
            keys = [_NAMESPACES, _NAMESPACES]
            return bool(await self._call(self._set_field(keys=keys, args=args)))
        if create:  # the default namespace exists, always
            return False
        # Nor can a replace of it fail, stored or not.
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(_NAMESPACES, namespace.name, value)
        pipe.publish(CHANGES, message)
        await self._call(pipe.execute())
        return True

    async def delete_namespace(self, name: str) -> bool:
        keys = [_NAMESPACES, _secrets(name)]
        args: list[str | int] = [
            name,
            _message("namespace", name, name),
            int(name == DEFAULT_NAMESPACE),
        ]
        return bool(await self._call(self._delete_namespace(keys=keys, args=args)))

    # --- what workers keep (policy states, cache statistics) ------------------------------------

    async def get_policy_states(self) -> dict[str, str]:
        return _text_keys(await self._call(self._redis.hgetall(_POLICY)))

    async def put_policy_state(self, app: str, state: str) -> None:
        await self._call(self._redis.hset(_POLICY, app, state))

    async def get_cache_stats(self, app: str) -> str | None:
        stats = await self._call(self._redis.hget(_CACHE_STATS, app))
        return None if stats is None else _text(stats)

    async def put_cache_stats(self, app: str, stats: str) -> None:
        await self._call(self._redis.hset(_CACHE_STATS, app, stats))

    async def close(self) -> None:
        """Nothing to release: the Redis client belongs to the caller, who closes it."""


def _secrets(namespace: str) -> str:
    # The namespace ends the key, so no two namespaces share one.
    return f"{_PREFIX}secrets:{namespace}"


def _secret_context(namespace: str, name: str) -> bytes:
    # Length-prefixed: no other (namespace, name) pair spells the same context.
    return f"faasd-py secret:{len(namespace)}:{namespace}:{name}".encode()


def _message(kind: str, namespace: str, name: str) -> str:
    return json.dumps({"kind": kind, "namespace": namespace, "name": name})


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _text_keys(mapping: dict[Any, Any]) -> dict[str, Any]:
    """A hash from HGETALL with str fields (and str values), whether or not the client
    decodes responses."""
    return {_text(field): _text(value) for field, value in mapping.items()}


def _stored(
    spec: bytes | str, created: bytes | str | None, replicas: bytes | str | None
) -> StoredFunction:
    return StoredFunction(
        spec=parse_deployment(json.loads(spec)),
        # Written with the spec by one script; 0 ("unknown") only if removed by hand, rather
        # than every listing failing.
        created_at=0.0 if created is None else float(created),
        replicas=None if replicas is None else int(replicas),
    )


def _namespace(name: str, stored: bytes | str) -> Namespace:
    value = json.loads(stored)
    return Namespace(name=name, labels=value["labels"], annotations=value["annotations"])
