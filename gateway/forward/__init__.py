"""Stage: forward."""
