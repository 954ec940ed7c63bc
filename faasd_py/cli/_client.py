"""The gateway client: one request helper, credentials, and the options that reach it."""

from __future__ import annotations

import base64
import contextlib
import functools
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

from faasd_py.cli._options import data_dir_option, parsed_by, shared_option
from faasd_py.config import DEFAULT_GATEWAY, Config
from faasd_py.errors import (
    BadRequest,
    FaasdError,
    InvocationTimeout,
    NotFound,
    SpecError,
    Unauthorized,
    Unavailable,
)
from faasd_py.spec import validate_namespace
from faasd_py.units import parse_duration

# Where `faasd-py up` keeps the gateway's Basic auth credentials, under its data dir.
USER_FILE = "basic-auth-user"
PASSWORD_FILE = "basic-auth-password"


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Message
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise FaasdError(
                f"the gateway answered HTTP {self.status} with a body that is not JSON"
            ) from None

    def error_text(self) -> str:
        """The gateway's own message: {"error": ...} in its JSON errors, else the body's text."""
        try:
            doc = json.loads(self.body)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            return str(doc["error"])
        text = self.body.decode(errors="replace").strip()
        return text[:500] if text else f"HTTP {self.status}"


_ERROR_BY_STATUS: dict[int, type[FaasdError]] = {400: BadRequest, 404: NotFound, 503: Unavailable}


@dataclass(frozen=True)
class Gateway:
    """A client of one gateway: its URL, the Basic auth header, a timeout per request."""

    url: str
    authorization: str | None
    credentials_dir: Path
    timeout: float

    def send(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        json_body: object = None,
        query: Sequence[tuple[str, str]] = (),
        headers: Sequence[tuple[str, str]] = (),
        check: bool = True,
    ) -> Reply:
        """One request, its answer read whole. With `check`, a non-2xx answer raises a
        FaasdError that carries the gateway's message."""
        request = self._request(method, path, body, json_body, query, headers)
        with self._io_errors(), self._open(request, self.timeout) as response:
            reply = Reply(response.status, response.headers, response.read())
        if check and not reply.ok:
            raise self._failure(reply)
        return reply

    def stream(
        self, method: str, path: str, *, query: Sequence[tuple[str, str]] = ()
    ) -> Iterator[bytes]:
        """The answer's body line by line as the gateway sends it, without a timeout (a
        followed log may stay quiet for hours); a non-2xx answer raises as `send` does."""
        request = self._request(method, path, None, None, query, ())
        with self._io_errors():
            response = self._open(request, None)
        with response:
            if not 200 <= response.status < 300:
                with self._io_errors():
                    reply = Reply(response.status, response.headers, response.read())
                raise self._failure(reply)
            while True:
                with self._io_errors():
                    line = response.readline()
                if not line:
                    return
                # Outside the guard: what the consumer does with a line is not a network error.
                yield line

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None,
        json_body: object,
        query: Sequence[tuple[str, str]],
        headers: Sequence[tuple[str, str]],
    ) -> urllib.request.Request:
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers = [("Content-Type", "application/json"), *headers]
        url = self.url.rstrip("/") + path
        if query:
            url += "?" + urllib.parse.urlencode(list(query))
        request = urllib.request.Request(url, data=body, method=method)
        for key, value in headers:
            request.add_header(key, value)
        if self.authorization and path.startswith("/system/"):
            request.add_header("Authorization", self.authorization)
        return request

    @staticmethod
    def _open(request: urllib.request.Request, timeout: float | None) -> Any:
        try:
            return urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            return exc  # a non-2xx answer is still an answer: the caller reads its body

    @contextlib.contextmanager
    def _io_errors(self) -> Iterator[None]:
        """Network failures, while connecting or reading, as the FaasdErrors users read."""
        try:
            yield
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            if isinstance(reason, TimeoutError):
                raise InvocationTimeout(
                    f"the gateway at {self.url} did not answer within {self.timeout:g}s "
                    "(see --timeout)"
                ) from None
            raise Unavailable(
                f"cannot reach the gateway at {self.url}: is `faasd-py up` running? ({reason})"
            ) from None

    def _failure(self, reply: Reply) -> FaasdError:
        if reply.status == 401:
            found = "rejected the credentials" if self.authorization else "needs credentials"
            return Unauthorized(
                f"the gateway {found}; pass --user and --password (or set FAASD_USER and "
                f"FAASD_PASSWORD), or give the --data-dir of `faasd-py up`: credentials are "
                f"read from {self.credentials_dir}"
            )
        kind = _ERROR_BY_STATUS.get(reply.status, FaasdError)
        return kind(reply.error_text())


def _read_secret_file(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _authorization(user: str | None, password: str | None, credentials: Path) -> str | None:
    """The Basic auth header: from the options, else from the files `up` wrote, else none."""
    user = user or _read_secret_file(credentials / USER_FILE)
    password = password or _read_secret_file(credentials / PASSWORD_FILE)
    if not user or password is None:
        return None
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return f"Basic {token}"


@dataclass(frozen=True)
class GatewayOptions:
    """What the gateway options said; `client()` resolves the URL (a stack may supply one)."""

    url: str | None
    user: str | None
    password: str | None
    data_dir: Path
    timeout: float
    namespace: str | None = None  # None: the gateway's default (openfaas-fn), or a stack's

    def namespace_query(self) -> list[tuple[str, str]]:
        """`?namespace=` for the /system calls that take it in the query."""
        return [] if self.namespace is None else [("namespace", self.namespace)]

    def with_namespace(self, body: dict[str, Any]) -> dict[str, Any]:
        """A JSON body with the `namespace` field, when one was asked for."""
        return body if self.namespace is None else {**body, "namespace": self.namespace}

    def client(self, stack_gateway: str | None = None) -> Gateway:
        credentials = Config(data_dir=self.data_dir).credentials_dir
        return Gateway(
            url=self.url or stack_gateway or DEFAULT_GATEWAY,
            authorization=_authorization(self.user, self.password, credentials),
            credentials_dir=credentials,
            timeout=self.timeout,
        )


def _namespace(text: str) -> str:
    try:
        return validate_namespace(text)
    except SpecError as exc:
        raise ValueError(exc.message.partition(": ")[2]) from None


_GATEWAY_OPTIONS = (
    shared_option(
        "--gateway",
        "-g",
        default=None,
        metavar="URL",
        help=f"The gateway (default: a stack's provider.gateway, else {DEFAULT_GATEWAY}).",
    ),
    shared_option(
        "--user", "-u", default=None, help="Basic auth user (default: read from the data dir)."
    ),
    shared_option(
        "--password", default=None, help="Basic auth password (default: read from the data dir)."
    ),
    data_dir_option,
    shared_option(
        "--namespace",
        default=None,
        callback=parsed_by(_namespace),
        help="The namespace of the functions and secrets (default: the gateway's, openfaas-fn).",
    ),
    shared_option(
        "--timeout",
        default="60s",
        show_default=True,
        callback=parsed_by(parse_duration),
        help="How long to wait for the gateway's answer.",
    ),
)


def gateway_command(command: Callable[..., None]) -> Callable[..., None]:
    """Adds the gateway options to a command, which receives them as `target: GatewayOptions`."""

    @functools.wraps(command)
    def wrapper(
        gateway: str | None,
        user: str | None,
        password: str | None,
        data_dir: Path,
        namespace: str | None,
        timeout: float,
        **kwargs: Any,
    ) -> None:
        target = GatewayOptions(gateway, user, password, data_dir, timeout, namespace)
        command(target=target, **kwargs)

    decorated: Callable[..., None] = wrapper
    for option in reversed(_GATEWAY_OPTIONS):
        decorated = option(decorated)
    return decorated
