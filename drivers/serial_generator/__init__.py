"""Driver for X-ray generators on a serial line (docs/generator-protocol.md)."""
