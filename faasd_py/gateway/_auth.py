"""HTTP Basic auth for /system/*, with credentials that `up` creates on first start."""

from __future__ import annotations

import base64
import binascii
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
        if not header or not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, _, password = decoded.partition(":")
        # Constant-time comparisons, so response timing says nothing about the password.
        return hmac.compare_digest(user, self.user) & hmac.compare_digest(password, self.password)


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
