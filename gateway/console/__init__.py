"""The technologist's and engineer's web console: static pages the daemon serves (see docs/console.md)."""
