"""What gateways and workers say to each other over faasd_py.cluster's transport: the ops, and
how an invocation, its outcome and a pool's figures become msgpack maps and back.

    gateway -> worker   invoke   {ref, call_id, method, path, query, headers, body, timeout}
                                 -> {status, headers, body, error, instance, queue, cold, exec,
                                     total}  or  {missing: true} (the function is not applied
                                     there: the gateway applies it and calls again)
                        apply    {spec (FunctionDeployment JSON), secrets {name: bytes}} -> {}
                        remove   {ref} -> {removed: bool}
                        scale    {ref, replicas} -> {}
                        secret   {namespace, name, value} -> {}
                        stats    {} -> {pools {ref: PoolStatistics fields}}
                        logs     {ref, tail, since, instance}
                                 -> {entries [[time, instance, text, stream]]}

Errors travel as the transport's (status, message): a worker's 400 for a spec it cannot run
reaches the user as the same 400.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from faasd_py.protocol import Request, Result
from faasd_py.worker import LogEntry, Outcome, PoolStatistics

_STATISTICS_FIELDS = frozenset(f.name for f in dataclasses.fields(PoolStatistics))


def invoke_args(ref: str, request: Request, timeout: float) -> dict[str, Any]:
    return {
        "ref": ref,
        "call_id": request.call_id,
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "headers": request.headers,
        "body": request.body,
        "timeout": timeout,
    }


def request_of(args: dict[str, Any]) -> Request:
    headers = [(str(name), str(value)) for name, value in args["headers"]]
    return Request(
        str(args["call_id"]),
        str(args["method"]),
        str(args["path"]),
        str(args["query"]),
        headers,
        bytes(args["body"]),
    )


def outcome_reply(outcome: Outcome, total: float) -> dict[str, Any]:
    """`total`: seconds from the request's arrival at the worker to this reply."""
    result = outcome.result
    return {
        "status": result.status,
        "headers": result.headers,
        "body": result.body,
        "error": result.error,
        "seconds": result.seconds,
        "instance": outcome.instance,
        "queue": outcome.queue_seconds,
        "cold": outcome.cold_start_seconds,
        "exec": outcome.exec_seconds,
        "total": total,
    }


def outcome_of(reply: dict[str, Any], round_trip: float) -> Outcome:
    """The worker's outcome; what the round trip took beyond the worker's own time is the
    network stage."""
    result = Result(
        id=0,
        status=int(reply["status"]),
        headers=[(str(name), str(value)) for name, value in reply["headers"]],
        body=bytes(reply["body"]),
        error=None if reply["error"] is None else str(reply["error"]),
        seconds=float(reply["seconds"]),
    )
    return Outcome(
        result,
        str(reply["instance"]),
        float(reply["queue"]),
        float(reply["cold"]),
        float(reply["exec"]),
        network_seconds=max(0.0, round_trip - float(reply["total"])),
    )


def statistics_reply(pools: dict[str, PoolStatistics]) -> dict[str, Any]:
    return {"pools": {ref: dataclasses.asdict(stats) for ref, stats in pools.items()}}


def statistics_of(reply: dict[str, Any]) -> dict[str, PoolStatistics]:
    pools: dict[str, Any] = reply["pools"]
    return {
        str(ref): PoolStatistics(**{k: v for k, v in fields.items() if k in _STATISTICS_FIELDS})
        for ref, fields in pools.items()
    }


def sum_statistics(parts: list[PoolStatistics]) -> PoolStatistics:
    """One function's figures over the workers it runs on."""
    first, *rest = parts
    total = dataclasses.asdict(first)
    for stats in rest:
        for name, value in dataclasses.asdict(stats).items():
            if name == "loaded":
                total[name] = total[name] or value
            else:
                total[name] += value
    return PoolStatistics(**total)


def entries_reply(entries: list[LogEntry]) -> dict[str, Any]:
    return {"entries": [[e.timestamp, e.instance, e.text, e.stream] for e in entries]}


def entries_of(reply: dict[str, Any]) -> list[LogEntry]:
    # A worker of an earlier faasd-py sends no stream: its lines read as stdout.
    return [
        LogEntry(float(t), str(i), str(text), str(rest[0]) if rest else "stdout")
        for t, i, text, *rest in reply["entries"]
    ]
