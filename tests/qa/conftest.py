from tests.correction.conftest import cal4, panel4

__all__ = ["cal4", "panel4"]  # the shared 768 x 768 panel and its calibration
