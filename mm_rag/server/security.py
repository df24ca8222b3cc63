"""Guards of the HTTP service: the API key, the request size limit, and confinement of server-side paths."""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import HTTPException, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import JSONResponse

_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="The server's API key.")
_BEARER = HTTPBearer(auto_error=False, description="The server's API key as a bearer token.")
_UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._ +=,@-]")
MAX_NAME_CHARS = 128

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def api_key_guard(expected: str | None) -> Callable[..., None]:
    """A dependency that refuses (401) a request without `expected` as its key; lets everything in when None.

    The key comes in an ``X-API-Key`` header or as ``Authorization: Bearer <key>``, and is compared in
    constant time.
    """
    wanted = None if expected is None else expected.encode()

    def guard(
        key: Annotated[str | None, Security(_KEY_HEADER)] = None,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)] = None,
    ) -> None:
        if wanted is None:
            return
        given = key if key is not None else (bearer.credentials if bearer is not None else None)
        if given is None or not hmac.compare_digest(given.encode(), wanted):
            raise HTTPException(
                status_code=401,
                detail="missing or wrong API key (send it as X-API-Key or Authorization: Bearer)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return guard


class BodyLimit:
    """ASGI middleware refusing request bodies over `max_bytes` with 413, while they are read.

    A declared ``Content-Length`` over the limit is refused before reading anything; a chunked body is counted
    as it arrives and refused at the first byte over the limit, before the application sees all of it. The
    multipart parser spools uploads into anonymous temporary files, so nothing is left behind.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _detail(self) -> str:
        return f"request body too large: the limit is {self.max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            status = 413 if declared.isdigit() else 400
            detail = self._detail() if declared.isdigit() else "malformed Content-Length"
            await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)
            return
        received = 0

        async def counted() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException passes through FastAPI's body parsing and becomes the response.
                    raise HTTPException(status_code=413, detail=self._detail())
            return message

        await self.app(scope, counted, send)


class PathRefused(HTTPException):
    """A server-side path the client may not ingest."""


def confine(root: Path, requested: str) -> Path:
    """`requested` (relative to `root`, or absolute) with every symlink resolved, if it lies inside `root`.

    Raises:
        PathRefused: 403 when it resolves outside `root` (``..``, an absolute path elsewhere, a link out),
            404 when it does not exist. The messages repeat only what the client sent.
    """
    if "\x00" in requested:
        raise PathRefused(status_code=400, detail="the path contains a NUL character")
    candidate = Path(requested)
    try:
        resolved = (candidate if candidate.is_absolute() else root / candidate).resolve()
    except (OSError, RuntimeError) as error:  # a name too long, a symlink loop (RuntimeError before 3.13)
        raise PathRefused(status_code=400, detail=f"{requested!r} cannot be resolved") from error
    if not resolved.is_relative_to(root):
        raise PathRefused(status_code=403, detail=f"{requested!r} is outside the ingest root")
    if not resolved.exists():
        raise PathRefused(status_code=404, detail=f"{requested!r} does not exist in the ingest root")
    return resolved


def safe_filename(name: str | None) -> str:
    """A harmless file name for an upload: the last path component of `name`, without odd characters."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE_NAME_CHARACTERS.sub("_", base).lstrip(".")[-MAX_NAME_CHARS:]
    return cleaned or "upload"
