"""The panel's STATUS, or its silence, as the gateway shows it (a DetectorStatus)."""

from __future__ import annotations

from drivers.usb_panel import protocol as p
from drivers.usb_panel.link import PanelGone
from gateway.errors import DeviceError
from gateway.types import DetectorStatus


def unreachable(exc: DeviceError, firmware: str) -> DetectorStatus:
    """A panel that does not answer or has left the bus: a state, with the error that says so."""
    state = "unplugged" if isinstance(exc, PanelGone) else "not answering"
    return DetectorStatus(state=state, temperature_c=None, over_temperature=False, frames_held=0,
                          battery_percent=None, link_quality_percent=None, firmware=firmware,
                          error=str(exc))


def detector_status(st: p.Status, firmware: str) -> DetectorStatus:
    state = st.state.name.lower() if isinstance(st.state, p.State) else f"state {st.state}"
    error = (f"over temperature ({st.temperature_c:.1f} C): the panel refuses to arm until it cools"
             if st.over_temperature else "")
    return DetectorStatus(state=state, temperature_c=st.temperature_c, over_temperature=st.over_temperature,
                          frames_held=st.frames_held, battery_percent=st.battery_percent,
                          link_quality_percent=st.link_quality_percent, firmware=firmware,
                          last_frame_number=st.last_frame_number, error=error,
                          exposure_ready=st.exposure_ready)
