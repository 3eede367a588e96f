"""Log-ins for the local API: server-side sessions in HttpOnly SameSite=Strict cookies, a CSRF
token per session required on every state-changing request, roles checked per route.

CSRF is enforced by middleware for every unsafe method (POST, PUT, PATCH, DELETE) on every
path, so a new route cannot forget it; the log-in itself instead needs a JSON body (a form
post from another site cannot send one) and no foreign Origin.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway.users import ROLES, AuthError, LockedOut, User, UserStore, role_allows

COOKIE = "dxgate_session"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
AuthEvent = Callable[[str, str, str, str], None]  # (kind, user, outcome, client address)


@dataclass
class Session:
    user: User
    csrf: str
    created: float
    seen: float


class Sessions:
    """In memory: a restart logs everyone out. Idle and absolute lifetimes, injectable clock."""

    def __init__(self, *, idle_s: float = 900.0, max_s: float = 43200.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_s, self.max_s, self._clock = idle_s, max_s, clock
        self._lock = threading.Lock()
        self._by_id: dict[str, Session] = {}

    def open(self, user: User) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)  # 256 bits
        now = self._clock()
        session = Session(user=user, csrf=secrets.token_urlsafe(32), created=now, seen=now)
        with self._lock:
            self._by_id[sid] = session
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        now = self._clock()
        with self._lock:
            s = self._by_id.get(sid)
            if s is None:
                return None
            if now - s.seen > self.idle_s or now - s.created > self.max_s:
                del self._by_id[sid]
                return None
            s.seen = now
            return s

    def close(self, sid: str | None) -> None:
        with self._lock:
            self._by_id.pop(sid or "", None)

    def expires_at(self, s: Session) -> float:
        return min(s.seen + self.idle_s, s.created + self.max_s)


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str = Field(max_length=64)
    password: str = Field(max_length=1024)


def install_auth(app: FastAPI, *, users: UserStore, sessions: Sessions, tls: bool = False,
                 on_event: AuthEvent | None = None) -> Callable[[str], Any]:
    """Add /api/login, /api/logout, /api/me and the CSRF middleware; return `require(role)`."""
    router = APIRouter()

    def event(kind: str, user: str, outcome: str, request: Request) -> None:
        if on_event is not None:
            on_event(kind, user, outcome, request.client.host if request.client else "")

    @app.middleware("http")
    async def csrf(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.method in UNSAFE:
            if request.url.path == "/api/login":
                origin = request.headers.get("origin")
                if origin is not None and origin.split("://", 1)[-1] != request.headers.get("host", ""):
                    return JSONResponse({"detail": "log-in from another origin refused"}, status_code=403)
                if not request.headers.get("content-type", "").startswith("application/json"):
                    return JSONResponse({"detail": "log-in needs a JSON body"}, status_code=415)
            else:
                session = sessions.get(request.cookies.get(COOKIE))
                if session is None:
                    return JSONResponse({"detail": "not logged in"}, status_code=401)
                token = request.headers.get(CSRF_HEADER, "")
                if not hmac.compare_digest(token.encode(), session.csrf.encode()):
                    return JSONResponse({"detail": "missing or wrong CSRF token"}, status_code=403)
        return await call_next(request)

    @router.post("/api/login")
    def login(body: Login, request: Request, response: Response) -> dict[str, Any]:
        try:
            user = users.verify(body.user, body.password)
        except LockedOut as exc:
            event("login", body.user, "locked", request)
            raise HTTPException(423, detail=str(exc)) from None
        except AuthError as exc:
            event("login", body.user, "refused", request)
            raise HTTPException(401, detail=str(exc)) from None
        sid, session = sessions.open(user)
        response.set_cookie(COOKIE, sid, httponly=True, samesite="strict", secure=tls, path="/")
        event("login", user.name, "ok", request)
        return _me(sessions, session)

    @router.post("/api/logout")
    def logout(request: Request, response: Response) -> dict[str, Any]:
        session = sessions.get(request.cookies.get(COOKIE))
        sessions.close(request.cookies.get(COOKIE))
        response.delete_cookie(COOKIE, path="/")
        if session is not None:
            event("logout", session.user.name, "ok", request)
        return {"ok": True}

    def require(role: str) -> Callable[[Request], User]:
        def dependency(request: Request) -> User:
            session = sessions.get(request.cookies.get(COOKIE))
            if session is None:
                raise HTTPException(401, detail="not logged in")
            _note(request, session.user, role)
            if not role_allows(session.user.role, role):
                raise HTTPException(403, detail=f"needs the {role} role")
            return session.user
        return dependency

    @router.get("/api/me")
    def me(request: Request, _: User = Depends(require("technologist"))) -> dict[str, Any]:  # noqa: B008
        session = sessions.get(request.cookies.get(COOKIE))
        assert session is not None
        return _me(sessions, session)

    app.include_router(router)
    return require


def install_local(app: FastAPI, *, role: str) -> Callable[[str], Any]:
    """Auth for the daemon's Unix socket: whoever the file permissions let connect acts as the
    local operator with `role` (as the offline commands on the state directory would). No
    cookies and no CSRF: a browser cannot reach a Unix socket."""
    local = User(name="local-operator", role=role)

    def require(needed: str) -> Callable[[Request], User]:
        def dependency(request: Request) -> User:
            _note(request, local, needed)
            if not role_allows(role, needed):
                raise HTTPException(403, detail=f"needs the {needed} role; the socket gives {role}")
            return local
        return dependency

    @app.get("/api/me")
    def me() -> dict[str, Any]:
        return {"user": local.name, "role": role, "csrf_token": "", "expires_in_s": None}

    return require


def _note(request: Request, user: User, needed: str) -> None:
    """Who made the request and the highest role it needed (the privileged-action audit reads them)."""
    request.state.user = user
    if ROLES.index(needed) > ROLES.index(getattr(request.state, "needed_role", ROLES[0])):
        request.state.needed_role = needed


def _me(sessions: Sessions, s: Session) -> dict[str, Any]:
    return {"user": s.user.name, "role": s.user.role, "csrf_token": s.csrf,
            "expires_in_s": round(sessions.expires_at(s) - s.seen, 1)}
