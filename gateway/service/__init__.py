"""The daemon: `dxgate run`, signals, systemd notify and watchdog, the local API server."""
