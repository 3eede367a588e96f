"""The local HTTP API: routes, log-ins and roles."""
