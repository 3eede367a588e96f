"""Stage: acquisition."""
