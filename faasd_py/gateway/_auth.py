"""HTTP Basic auth for /system/*, with credentials that `up` creates on first start."""

from __future__ import annotations

import base64
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from faasd_py.errors import Unauthorized

USER_FILE = "basic-auth-user"
PASSWORD_FILE = "basic-auth-password"


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str

    def matches(self, header: str | None) -> bool:
        """Whether `header` is `Basic base64(user:password)` with these credentials. Anything
        else, malformed or not, is a plain False: an unauthenticated client gets 401, never
        a 500 or a traceback in the log."""
        if not header or not header.startswith("Basic "):
            return False
        try:
            # ValueError covers bad base64 (binascii.Error) and non-ASCII text in the header.
            decoded = base64.b64decode(header[6:], validate=True)
        except ValueError:
            return False
        user, colon, password = decoded.partition(b":")
        # Bytes, not str: compare_digest refuses non-ASCII str, and a user or password in any
        # encoding must simply fail to match. Both compared always (constant time), so response
        # timing says nothing about which one was wrong.
        same_user = hmac.compare_digest(user, self.user.encode())
        same_password = hmac.compare_digest(password, self.password.encode())
        return bool(colon) & same_user & same_password


def load_or_create_credentials(directory: Path) -> tuple[Credentials, bool]:
    """The stored credentials, or new ones (user admin, a random password) written mode 0600.

    Returns the credentials and whether they were created now.
    """
    user_path, password_path = directory / USER_FILE, directory / PASSWORD_FILE
    if user_path.exists() and password_path.exists():
        return Credentials(user_path.read_text().strip(), password_path.read_text().strip()), False
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    credentials = Credentials("admin", secrets.token_urlsafe(24))
    for path, value in ((user_path, credentials.user), (password_path, credentials.password)):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(value + "\n")
    return credentials, True


def basic_auth_middleware(credentials: Credentials) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/system/") and not credentials.matches(
            request.headers.get("Authorization")
        ):
            raise Unauthorized(
                "missing or wrong credentials: use HTTP Basic auth with the user and password "
                "that `faasd-py up` wrote to its data dir (credentials/)"
            )
        return await handler(request)

    return middleware
