"""Async invocations lose nothing when anything is killed: 2,000 calls with callbacks while the
queue-worker process (Redis queue) or `up` itself (embedded queue) is SIGKILLed five times, and
Redis stopped for seconds while calls are being enqueued. Every call answered 202 must reach its
callback at least once; duplicates are reported, not failed (delivery is at least once).

Real processes throughout: `faasd-py up` and `faasd-py queue-worker` as a user starts them, a
redis-server with an append-only file synced on every write, callbacks to an aiohttp server in
the test."""

from __future__ import annotations

import asyncio
import random
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.e2e.conftest import (
    FAASD_PY,
    Cli,
    clean_environment,
    free_port,
    terminate,
    wait_healthy,
)
from tests.integration._redis import RedisServer

pytestmark = pytest.mark.slow

CALLS = 2_000
KILLS = 5
# Deadlines only catch hangs: a run that loses a call waits this long, then fails naming it.
DRAIN = 240.0
LEASE = "1s"  # a killed consumer's calls are due again after this

HELLO = "def handle(event, context):\n    return 'hello ' + event.body.decode()\n"


class Callbacks:
    """An aiohttp server that counts the callbacks of each call id."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.changed = asyncio.Event()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/cb", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/cb"

    async def _receive(self, request: web.Request) -> web.Response:
        await request.read()
        self.seen[request.headers["X-Call-Id"]] += 1
        self.statuses[request.headers["X-Function-Status"]] += 1
        self.changed.set()
        return web.Response(status=204)

    async def until_all(self, call_ids: set[str]) -> None:
        """Wait until every one of `call_ids` has had its callback (DRAIN catches a loss)."""
        try:
            async with asyncio.timeout(DRAIN):
                while missing := call_ids - self.seen.keys():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            lost = sorted(call_ids - self.seen.keys())
            raise AssertionError(
                f"{len(lost)} calls never reached their callback: {lost[:20]}"
            ) from None
        assert not missing

    def duplicates(self) -> int:
        return sum(count - 1 for count in self.seen.values())

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def callbacks() -> AsyncIterator[Callbacks]:
    found = Callbacks()
    await found.start()
    yield found
    await found.close()


class Process:
    """A `faasd-py` command run as its own process, killed with SIGKILL and started again."""

    def __init__(self, args: Sequence[str], env: dict[str, str], log: Path) -> None:
        self.args, self.env, self.log = list(args), env, log
        self.process: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                [FAASD_PY, *self.args], env=self.env, stdout=sink, stderr=subprocess.STDOUT
            )
        return self.process

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.kills += 1

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        terminate(self.process)


async def enqueue(session: aiohttp.ClientSession, url: str, call_id: str, callback: str) -> str:
    """POST one async call; its answer's status, or the name of the error that cut it off."""
    headers = {"X-Call-Id": call_id, "X-Callback-Url": callback}
    try:
        async with session.post(url, data=call_id.encode(), headers=headers) as response:
            await response.read()
            return str(response.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__


def kill_points(rng: random.Random, total: int, kills: int) -> list[int]:
    """Callback counts at which to kill: random, spread over the run, none at its very end."""
    return sorted(rng.sample(range(total // 20, total * 9 // 10), kills))


class HelloUp:
    """`faasd-py up` on a free port with a hello function built and deployed (`--deploy`),
    started as a Process that tests can kill and start again; `env` points the CLI at it."""

    def __init__(self, root: Path, *up_args: str) -> None:
        port = free_port()
        self.gateway = f"http://127.0.0.1:{port}"
        self.url = f"{self.gateway}/async-function/hello"
        self.root = root
        self.env = {
            **clean_environment(),
            "FAASD_DATA_DIR": str(root / "data"),
            "FAASD_GATEWAY": self.gateway,
        }
        cli = Cli(cwd=root, env=self.env)
        cli.ok("new", "hello")
        (root / "hello" / "handler.py").write_text(HELLO)
        cli.ok("build", "hello")
        args = ["up", "--port", str(port), "--deploy", str(root / "stack.yml"), *up_args]
        self.up = Process(args, self.env, root / "up.log")

    async def start(self) -> None:
        """Start `up` and wait until it answers (the first time, until hello is deployed)."""
        wait_healthy(self.gateway, self.up.start(), self.up.log)
        await asyncio.to_thread(self._until_deployed)

    def _until_deployed(self) -> None:
        cli = Cli(cwd=self.root, env=self.env)
        for _ in range(300):
            if cli("invoke", "hello", input=b"x").returncode == 0:
                return
            time.sleep(0.1)
        raise AssertionError("the hello function was never deployed")


async def test_no_call_is_lost_while_the_queue_worker_is_killed_five_times(
    tmp_path: Path, callbacks: Callbacks
) -> None:
    redis = RedisServer(tmp_path, aof=True)
    redis.start()
    hello = HelloUp(tmp_path, "--queue", redis.url, "--no-queue-consumer")
    consumer = Process(
        ["queue-worker", "--queue", redis.url, "--queue-lease", LEASE, "--queue-concurrency", "16"],
        hello.env,
        tmp_path / "qw.log",
    )
    try:
        await hello.start()
        consumer.start()
        points = kill_points(random.Random(12), CALLS, KILLS)
        call_ids = {f"qw-{n}" for n in range(CALLS)}

        async def kill_at_points() -> None:
            for point in points:
                while len(callbacks.seen) < point:
                    callbacks.changed.clear()
                    await callbacks.changed.wait()
                consumer.kill()
                consumer.start()

        killer = asyncio.create_task(kill_at_points())
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            sem = asyncio.Semaphore(32)

            async def one(call_id: str) -> str:
                async with sem:
                    return await enqueue(session, hello.url, call_id, callbacks.url)

            answers = await asyncio.gather(*(one(c) for c in sorted(call_ids)))
        assert Counter(answers) == {"202": CALLS}
        await callbacks.until_all(call_ids)
        await asyncio.wait_for(killer, DRAIN)
    finally:
        consumer.stop()
        hello.up.stop()
        redis.stop()
    assert consumer.kills == KILLS
    assert callbacks.statuses.keys() == {"200"}
    print(
        f"\n{CALLS} calls, {KILLS} SIGKILLs of the queue-worker: 0 lost, "
        f"{callbacks.duplicates()} duplicate callbacks"
    )


async def test_no_call_is_lost_while_up_is_killed_five_times_with_the_embedded_queue(
    tmp_path: Path, callbacks: Callbacks
) -> None:
    """Calls answered 202 are in queue.sqlite3 before the answer: a SIGKILL of `up` loses none,
    and the calls it was running are delivered again when it starts. Calls that got no answer
    (the connection died with `up`) may or may not have been stored: they are not counted."""
    hello = HelloUp(tmp_path, "--queue-concurrency", "16")
    accepted: set[str] = set()
    answers: Counter[str] = Counter()
    try:
        await hello.start()
        rng = random.Random(21)
        points = kill_points(rng, CALLS, KILLS)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            n = 0

            async def send_batch() -> None:
                nonlocal n
                batch = [f"up-{n + i}" for i in range(32)]
                n += len(batch)
                sent = (enqueue(session, hello.url, c, callbacks.url) for c in batch)
                for call_id, answer in zip(batch, await asyncio.gather(*sent), strict=True):
                    answers[answer] += 1
                    if answer == "202":
                        accepted.add(call_id)

            async def kill_soon() -> None:
                await asyncio.sleep(rng.uniform(0.0, 0.02))
                hello.up.kill()

            for point in [*points, CALLS]:
                while len(accepted) < point:
                    await send_batch()
                if point < CALLS:
                    # The kill lands while a batch of enqueues is on its way (and while the
                    # consumer runs calls); then `up` starts again on the same data dir.
                    await asyncio.gather(send_batch(), kill_soon())
                    await hello.start()
        await callbacks.until_all(accepted)
    finally:
        hello.up.stop()
    assert hello.up.kills == KILLS
    assert set(answers) <= {
        "202",
        "ClientConnectionError",
        "ServerDisconnectedError",
        "ClientOSError",
    }, answers
    print(
        f"\n{len(accepted)} calls accepted, {KILLS} SIGKILLs of up: 0 lost, "
        f"{callbacks.duplicates()} duplicate callbacks; answers {dict(answers)}"
    )


async def test_redis_stopped_while_calls_are_enqueued_loses_none_that_got_202(
    tmp_path: Path, callbacks: Callbacks
) -> None:
    """While Redis is down, enqueues answer 503 naming the queue (never a 202 for a call that
    was not stored); the consumer inside `up` resumes when Redis is back."""
    redis = RedisServer(tmp_path, aof=True)
    redis.start()
    hello = HelloUp(tmp_path, "--queue", redis.url)
    accepted: set[str] = set()
    refusals: list[str] = []
    answers: Counter[str] = Counter()
    try:
        await hello.start()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            loop = asyncio.get_running_loop()
            started = loop.time()
            # Redis runs for the first 1.5 s, is down for 3 s, then back for 1.5 s.
            phases = iter([(1.5, redis.stop), (4.5, redis.start), (6.0, None)])
            until, change = next(phases)
            n = 0
            while True:
                if loop.time() - started >= until:
                    if change is None:
                        break
                    change()  # the same port and append-only file when it starts again
                    until, change = next(phases)
                call_id = f"rd-{n}"
                n += 1
                headers = {"X-Call-Id": call_id, "X-Callback-Url": callbacks.url}
                async with session.post(hello.url, data=b"x", headers=headers) as response:
                    body = await response.text()
                    answers[str(response.status)] += 1
                    if response.status == 202:
                        accepted.add(call_id)
                    else:
                        refusals.append(body)
                await asyncio.sleep(0.01)
        assert answers["202"] > 0 and answers["503"] > 0, answers
        assert set(answers) == {"202", "503"}, answers
        assert all(
            "async queue unavailable" in r and redis.url.split("/")[2] in r for r in refusals
        ), refusals[:3]
        await callbacks.until_all(accepted)
    finally:
        hello.up.stop()
        redis.stop()
    print(
        f"\n{len(accepted)} calls accepted, {answers['503']} refused while Redis was down: "
        f"0 lost, {callbacks.duplicates()} duplicate callbacks"
    )
