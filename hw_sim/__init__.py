"""Hardware simulator: stands in for the detector and generator, reached only through configuration.

room.SimRoom ties it together: panel.SimPanel (firmware) on usb_backend.SimUsbBackend (a pyusb
backend), generator.SimGenerator on a pseudo-terminal, detector_model.DetectorModel (physics
with ground truth), phantoms (scenes as transmission maps) and collimation. process runs it as its
own process, cli drives it (docs/simulator.md). Nothing in gateway/ or drivers/ imports this package.
"""
