"""Frames dropped into a folder by vendor acquisition software (raw pixels plus a JSON sidecar)."""
