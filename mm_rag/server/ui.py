"""The search page at ``/``: plain HTML, CSS and JavaScript shipped in the package (no build step, no CDN).

The page and its two files are public (they hold nothing of the store); every call the page makes goes to the
JSON API and `/media`, with the API key as a header when the server has one. The page's policy forbids inline
scripts and styles, plugins, frames and any origin but the server's own.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException
from starlette.responses import FileResponse

UI_DIR = Path(__file__).parent / "ui"
_FILES = {"ui.js": "text/javascript", "ui.css": "text/css"}
UI_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; media-src 'self' blob:;"
        " connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def add_ui(app: FastAPI) -> None:
    """Serve the search page at ``/`` and its script and style under ``/ui/``."""

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(UI_DIR / "index.html", media_type="text/html", headers=UI_HEADERS)

    @app.get("/ui/{name}", include_in_schema=False)
    def asset(name: str) -> FileResponse:
        if name not in _FILES:
            raise HTTPException(status_code=404, detail="no such file")
        return FileResponse(UI_DIR / name, media_type=_FILES[name], headers=UI_HEADERS)
