"""The daemon's ASGI application: log-ins, the API routes, /metrics, the web console."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from gateway import __version__
from gateway.api.auth import AuthEvent, Sessions, install_auth, install_local
from gateway.api.console_routes import build_console_router
from gateway.api.routes import ApiContext, build_router
from gateway.app import Gateway
from gateway.config import ApiConfig
from gateway.console.mount import mount_console
from gateway.events import EventBus
from gateway.heartbeat import Heartbeats
from gateway.metrics import Metrics
from gateway.users import UserStore


def build_app(api: ApiConfig, gw: Gateway, users: UserStore, *, metrics: Metrics, events: EventBus,
              heartbeats: Heartbeats, on_auth: AuthEvent | None = None,
              audit_query: Callable[..., list[dict[str, Any]]] | None = None,
              local_role: str | None = None) -> FastAPI:
    """The API over TCP with log-ins, or (`local_role`) the same API for the Unix socket."""
    app = FastAPI(title="dxgate", version=__version__, docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    if local_role is not None:
        require = install_local(app, role=local_role)
    else:
        sessions = Sessions(idle_s=api.session_idle_s, max_s=api.session_max_s)
        require = install_auth(app, users=users, sessions=sessions, tls=bool(api.tls_cert), on_event=on_auth)
    ctx = ApiContext(gateway=gw, metrics=metrics, events=events,
                     extra_status=lambda: {"stages": {k: round(v, 1) for k, v in heartbeats.ages().items()},
                                           "stale": heartbeats.stale(),
                                           "detector_temperature_c": metrics.levels.detector_temperature_c()},
                     audit_query=audit_query)
    app.include_router(build_router(ctx, require))
    if local_role is None:  # the console is for browsers, over TCP with log-ins
        app.include_router(build_console_router(ctx, require))
        mount_console(app)
    return app
