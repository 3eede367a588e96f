"""Stage: spool."""
