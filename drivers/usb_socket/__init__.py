"""A pyusb backend that reaches USB devices served over a local socket (the simulator process)."""
