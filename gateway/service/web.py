"""The daemon's ASGI application: log-ins, the API routes, /metrics, the web console."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import __version__
from gateway.api.auth import AuthEvent, Sessions, install_auth, install_local
from gateway.api.config_routes import build_config_router
from gateway.api.console_routes import build_console_router
from gateway.api.context import ApiContext
from gateway.api.routes import build_router
from gateway.app import Gateway
from gateway.config import ApiConfig
from gateway.console.mount import mount_console
from gateway.events import EventBus
from gateway.heartbeat import Heartbeats
from gateway.metrics import Metrics
from gateway.users import UserStore

PrivilegedAction = Callable[[str, str, int], None]


class PrivilegedActionAudit:
    """ASGI middleware reporting each state-changing request that needed more than the
    technologist role, with its user and outcome (a refused one too: a technologist trying to
    calibrate is audited). Plain ASGI, so the event stream's responses pass through untouched."""

    def __init__(self, app: ASGIApp, on_action: PrivilegedAction) -> None:
        self.app, self.on_action = app, on_action

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            state = scope.get("state") or {}
            user = state.get("user")
            if user is not None and state.get("needed_role", "technologist") != "technologist":
                self.on_action(user.name, f"POST {scope['path']}", status)


def build_app(api: ApiConfig, gw: Gateway, users: UserStore, *, metrics: Metrics, events: EventBus,
              heartbeats: Heartbeats, on_auth: AuthEvent | None = None,
              audit_query: Callable[..., list[dict[str, Any]]] | None = None,
              on_action: PrivilegedAction | None = None, local_role: str | None = None,
              config_path: Path | None = None, reload_config: Callable[[], str] | None = None,
              on_config_change: Callable[[str, bool, str], None] | None = None) -> FastAPI:
    """The API over TCP with log-ins, or (`local_role`) the same API for the Unix socket.

    `on_action(user, action, status)` hears every POST that needed the engineer or admin role,
    done or refused (the audit trail's "Use of Restricted Function")."""
    app = FastAPI(title="dxgate", version=__version__, docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    if on_action is not None:
        app.add_middleware(PrivilegedActionAudit, on_action=on_action)
    if local_role is not None:
        require = install_local(app, role=local_role)
    else:
        sessions = Sessions(idle_s=api.session_idle_s, max_s=api.session_max_s)
        require = install_auth(app, users=users, sessions=sessions, tls=bool(api.tls_cert), on_event=on_auth)
    ctx = ApiContext(gateway=gw, metrics=metrics, events=events,
                     extra_status=lambda: {"stages": {k: round(v, 1) for k, v in heartbeats.ages().items()},
                                           "stale": heartbeats.stale(),
                                           "detector_temperature_c": metrics.levels.detector_temperature_c()},
                     audit_query=audit_query, config_path=config_path, reload_config=reload_config,
                     on_config_change=on_config_change)
    app.include_router(build_router(ctx, require))
    if local_role is None:  # the console is for browsers, over TCP with log-ins
        app.include_router(build_console_router(ctx, require))
        app.include_router(build_config_router(ctx, require))
        mount_console(app)
    return app
