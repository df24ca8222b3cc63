"""Guards of the HTTP services: the API key, the request size limit, and confinement of server-side paths."""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import HTTPException, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.responses import JSONResponse

_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="The server's API key.")
_BEARER = HTTPBearer(auto_error=False, description="The server's API key as a bearer token.")
_UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._ +=,@-]")
MAX_NAME_CHARS = 128
MAX_DOCUMENT_CHARS = 512  # a client-chosen document name: its parts, with the '/' between them
MAX_DOCUMENT_DEPTH = 8
MAX_ECHO_CHARS = 200  # most characters of the client's input an error message repeats

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


KEY_MISSING = "missing or wrong API key (send it as X-API-Key or Authorization: Bearer)"


def key_matches(given: str | None, wanted: bytes) -> bool:
    """Whether `given` is the key `wanted`, compared in constant time (no timing hint about its prefix)."""
    return given is not None and hmac.compare_digest(given.encode(), wanted)


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
        if not key_matches(given, wanted):
            raise HTTPException(status_code=401, detail=KEY_MISSING, headers={"WWW-Authenticate": "Bearer"})

    return guard


class KeyRequired:
    """ASGI middleware refusing (401) every HTTP request without `key`, for applications that are not FastAPI's.

    The MCP SDK's streamable-HTTP application is a plain Starlette one: this wraps it from outside, the way
    `api_key_guard` guards the HTTP service, with the same headers (``X-API-Key``, or ``Authorization: Bearer
    <key>``) and the same constant-time comparison. Lifespan events pass through untouched.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], key: str) -> None:
        if not key:
            raise ValueError("KeyRequired needs a non-empty key")
        self.app = app
        self.wanted = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # start-up and shutdown of the application, not a request
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        given = headers.get("x-api-key")
        if given is None:
            scheme, _, credentials = headers.get("authorization", "").partition(" ")
            given = credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None
        if key_matches(given, self.wanted):
            await self.app(scope, receive, send)
            return
        refusal = JSONResponse({"detail": KEY_MISSING}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        await refusal(scope, receive, send)


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


def document_name(requested: str) -> str:
    """A client-chosen document name for an upload (``notes.md``, ``team/notes.md``), checked, in POSIX form.

    The name becomes the upload's path inside the uploads folder, so each part must be a harmless file name
    (the characters `safe_filename` keeps, not starting with a dot) and there can be no ``..``, absolute
    path or empty part: nothing can point outside the folder or at the server's own temporary files.

    Raises:
        InvalidInputError: naming the part refused and what is allowed.
    """
    from mm_rag.errors import InvalidInputError

    parts = requested.replace("\\", "/").split("/")
    if len(requested) > MAX_DOCUMENT_CHARS or len(parts) > MAX_DOCUMENT_DEPTH:
        raise InvalidInputError(
            f"doc_id is too long: at most {MAX_DOCUMENT_CHARS} characters in {MAX_DOCUMENT_DEPTH} parts"
        )
    for part in parts:
        if not part or part != safe_filename(part) or len(part) > MAX_NAME_CHARS:
            raise InvalidInputError(
                f"doc_id {shorten(requested)!r}: the part {shorten(part)!r} is not allowed; use letters, digits"
                " and . _ - + = , @ or space, not starting with a dot, parts separated by '/'"
            )
    return "/".join(parts)


def shorten(value: Any, limit: int = MAX_ECHO_CHARS) -> Any:
    """`value` as an error message may repeat it: long text cut to `limit` characters with its length told.

    Error messages repeat the client's input so it can see what was refused; a 500 KB query repeated back
    whole would only double the traffic and bury the reason.
    """
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value if len(value) <= limit else f"{value[:limit]}… ({len(value)} characters)"
    if isinstance(value, (dict, list, tuple)) and len(repr(value)) > limit:
        return f"{repr(value)[:limit]}… ({type(value).__name__} of {len(value)} items)"
    return value


# --- what the server shows of its own folders ----------------------------------------------------------------
# A quoted absolute path inside a model's repr ('/home/me/models/clip.pt'): shown by its name when paths are hidden.
_QUOTED_PATH = re.compile(r"'(/[^']*)'")
_HF_CACHE_FOLDER = re.compile(r"models--([^/]+)--([^/]+)")


def _path_name(value: str) -> str:
    """A model named by a local path, shown without the server's folders: a Hugging Face cache folder by its
    repository (``sentence-transformers/all-MiniLM-L6-v2``), any other path by its last part."""
    cached = _HF_CACHE_FOLDER.search(value)
    return f"{cached[1]}/{cached[2]}" if cached else Path(value).name


def without_paths(spec: Any) -> Any:
    """A space's model spec with every absolute path replaced by its name (see `_path_name`)."""
    if isinstance(spec, dict):
        return {key: without_paths(value) for key, value in spec.items()}
    if isinstance(spec, list):
        return [without_paths(value) for value in spec]
    if isinstance(spec, str) and os.path.isabs(spec):
        return _path_name(spec)
    return spec


def without_quoted_paths(text: str) -> str:
    """`text` (a model's repr) with each quoted absolute path in it shown by its name (see `_path_name`)."""
    return _QUOTED_PATH.sub(lambda match: repr(_path_name(match[1])), text)
