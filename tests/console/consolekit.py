"""Helpers of the console tests: an HTTP client that keeps cookies and never follows redirects,
console users made with the real CLI; and the fleet helpers on the import path."""

from __future__ import annotations

import http.cookiejar
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from email.message import Message
from pathlib import Path

from conftest import cli

# The console tests reuse the fleet tests' helpers (enrolled agents, load agents).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fleet"))

PASSWORDS = {"admin": "admin-password-123", "viewer": "viewer-password-123"}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class Client:
    """A cookie-keeping client; `request` returns (status, headers, body) and never follows redirects."""

    def __init__(self, base: str, context: object | None = None) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        handlers: list[urllib.request.BaseHandler] = [
            urllib.request.HTTPCookieProcessor(self.jar),
            _NoRedirect(),
        ]
        if context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=context))  # type: ignore[arg-type]
        self.opener = urllib.request.build_opener(*handlers)

    def request(
        self, path: str, form: dict[str, str] | None = None, headers: dict[str, str] | None = None,
        method: str | None = None,
    ) -> tuple[int, Message, str]:  # fmt: skip
        status, headers_in, body = self.fetch(path, form, headers, method)
        return status, headers_in, body.decode()

    def fetch(
        self, path: str, form: dict[str, str] | None = None, headers: dict[str, str] | None = None,
        method: str | None = None,
    ) -> tuple[int, Message, bytes]:  # fmt: skip
        """As `request`, with the body as bytes (downloads such as the PDF report)."""
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(self.base + path, data=data, headers=headers or {}, method=method)
        try:
            with self.opener.open(req, timeout=60) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()

    def csrf(self, path: str) -> str:
        status, _, body = self.request(path)
        assert status == 200, (path, status)
        found = re.search(r'name="csrf" value="([^"]+)"', body)
        assert found, body[:500]
        return found.group(1)

    def login(self, user: str, password: str) -> int:
        token = self.csrf("/login")
        status, _, _ = self.request(
            "/login", {"csrf": token, "username": user, "password": password, "next": "/"}
        )
        return status


def set_cookie(headers: Message, name: str) -> str:
    """The response's Set-Cookie line for cookie `name` (exactly one)."""
    (line,) = [v for v in headers.get_all("Set-Cookie") or [] if v.startswith(f"{name}=")]
    return line


def add_user(db_url: str, name: str, role: str, password: str | None = None) -> None:
    result = subprocess.run(
        [cli("umbra-collector"), "user", "add", name, "--role", role, "--password-stdin", "--db", db_url],
        input=(password or PASSWORDS[role]) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def api_key(db_url: str, role: str) -> str:
    result = subprocess.run(
        [cli("umbra-collector"), "apikey", "create", "--role", role, "--db", db_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()
