"""Cairn's own web page at / and its static assets at /static/, both open without a key."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.middleware.gzip import GZipMiddleware
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from serving.web import STATIC_DIR

router = APIRouter(tags=["page"])

#: Where the page's assets are served; the access middleware lets this prefix through without a key.
STATIC_PREFIX = "/static"

# The page runs only what it was served from here and talks only to this service: a model's answer
# that slipped markup past the sanitiser still could not load a script, an image or a font from elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # the page is small and changes with the package: revalidate instead of serving a stale one
    "Cache-Control": "no-cache",
}


@router.get("/", response_class=FileResponse, responses={200: {"content": {"text/html": {}}}})
async def page() -> FileResponse:
    """The web page: chat with the agent, its steps and citations, search, sessions (no key needed to load)."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)


def static_assets() -> ASGIApp:
    """Return the ASGI app serving the page's assets, gzipped for clients that accept it."""
    # Only the assets are gzipped: the API's event streams must go out unbuffered.
    return GZipMiddleware(StaticFiles(directory=STATIC_DIR), minimum_size=1024)
