"""Stage: worklist."""
