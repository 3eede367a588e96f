"""Stage: acquisition — the exposure state machine over a Detector and a Generator port."""

from gateway.acquisition.sequence import ExposureSequence, StateListener
from gateway.acquisition.state import ExposureState, IllegalTransition

__all__ = ["ExposureSequence", "ExposureState", "IllegalTransition", "StateListener"]
