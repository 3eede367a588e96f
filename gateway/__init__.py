"""dxgate: acquisition gateway for digital X-ray rooms."""

__version__ = "0.1.0"
