"""Who may use the server: an API key (`Authorization: Bearer <key>`) on every route but
/healthz, and the refusal to serve beyond this machine without one."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json

OPEN_PATHS = frozenset({"/healthz"})


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach `host` (a name other than localhost counts as
    reachable from elsewhere)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ApiKeyGate:
    """ASGI middleware: a request without the key, or with another, is answered 401 before
    any route sees it. The keys are compared as SHA-256 digests with hmac.compare_digest:
    in constant time, whatever the length of what was sent."""

    def __init__(self, app, key: str, open_paths: frozenset[str] = OPEN_PATHS):
        self.app, self.open_paths = app, open_paths
        self.expected = hashlib.sha256(key.encode()).digest()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            return await self.app(scope, receive, send)
        header = next((value for name, value in scope["headers"] if name == b"authorization"),
                      b"")
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"bearer" or not given.strip():
            return await refuse(send, "this server needs an API key: send the header "
                                      "'Authorization: Bearer <key>'", "")
        if not hmac.compare_digest(hashlib.sha256(given.strip()).digest(), self.expected):
            return await refuse(send, "the API key is not valid", ', error="invalid_token"')
        await self.app(scope, receive, send)


async def refuse(send, message: str, challenge: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": 401, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", f'Bearer realm="edge-ner"{challenge}'.encode())]})
    await send({"type": "http.response.body", "body": body})
