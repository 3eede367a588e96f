"""Driver for USB flat-panel detectors speaking the dxgate panel protocol (docs/detector-protocol.md)."""
