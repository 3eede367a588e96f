"""The operator commands' side of the daemon's Unix socket (`dxgate status`, `dxgate queue`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from gateway.errors import DaemonUnreachable, DxgateError


class DaemonClient:
    """JSON over HTTP on the daemon's Unix socket; every failure is one clear DxgateError."""

    def __init__(self, socket_path: Path, *, timeout_s: float = 30.0) -> None:
        self.path = socket_path
        self._http = httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path)), base_url="http://dxgate",
                                  timeout=timeout_s)

    def __enter__(self) -> DaemonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def get(self, path: str, **params: Any) -> Any:
        return self._call("GET", path, params)

    def post(self, path: str, **params: Any) -> Any:
        return self._call("POST", path, params)

    def _call(self, method: str, path: str, params: dict[str, Any]) -> Any:
        if not self.path.exists():
            raise DaemonUnreachable(f"dxgate is not running: no API socket at {self.path}")
        query = {k: v for k, v in params.items() if v is not None}
        try:
            response = self._http.request(method, path, params=query)
        except PermissionError:
            raise DxgateError(f"permission denied on {self.path}: run as the daemon's user or root, or set "
                              "api.socket_group") from None
        except httpx.TransportError as exc:
            cause = exc.__cause__ or exc.__context__ or exc
            if isinstance(cause, PermissionError):
                raise DxgateError(f"permission denied on {self.path}: run as the daemon's user or root, or set "
                                  "api.socket_group") from None
            raise DaemonUnreachable(f"dxgate does not answer on {self.path}: {exc}") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise DxgateError(f"{method} {path}: {detail} (HTTP {response.status_code})")
        return response.json()
