"""Serve the console's static pages from the package, with headers that keep them self-contained.

The pages are plain HTML, CSS and JavaScript shipped as package data: no build step and
nothing fetched from elsewhere (the Content-Security-Policy allows this origin only, so a
page that tried would be refused by the browser). Patient data reaches a page only through
the API, after log-in; the files themselves hold none.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

PREFIX = "/console"
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
                                "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                                "frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class ConsoleFiles(StaticFiles):
    """The package's static directory, every response with the console's security headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def mount_console(app: FastAPI) -> None:
    """Serve the console at /console/ (the log-in page) and send / there."""
    app.mount(PREFIX, ConsoleFiles(packages=[("gateway.console", "static")], html=True), name="console")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=303)
