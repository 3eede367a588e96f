"""Stage: correction."""
