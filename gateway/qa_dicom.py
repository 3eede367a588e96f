"""QA flats as DX For Processing images, for a physicist who repeats the measurement elsewhere.

One study per QA run, one image per corrected flat, built by the gateway's own DX builder
(gateway/dicom/dx.py) as the clinical For Processing images are: the linear corrected frame,
its exposure as the generator confirmed it, the detector and the calibration in the image's
history. No patient: the Patient ID names the panel ("QA-<serial>") and the name says what it
is. The builder needs an anatomic region: QA_BODY_PART / QA_VIEW (an open field has none).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from gateway.config import Config
from gateway.correction import exposure_index
from gateway.dicom import build_dx, new_uid, to_bytes
from gateway.durable import makedirs_durable, write_new_file
from gateway.errors import DxgateError
from gateway.types import CorrectedFrame, DetectorInfo, Exposure, WorklistItem

LOGGER = logging.getLogger(__name__)

QA_BODY_PART, QA_VIEW = "CHEST", "AP"  # the builder asks for one; an open field has no anatomy
QA_PATIENT_NAME = "QA^FLAT FIELD"


def save_qa_flats(directory: Path, flats: Sequence[tuple[CorrectedFrame, Exposure]], *, config: Config,
                  detector: DetectorInfo, pixel_spacing_mm: tuple[float, float], now: datetime) -> list[Path]:
    """Write each corrected flat as a DX For Processing file under `directory`; their paths."""
    if not flats:
        raise DxgateError("no QA flat to save")
    root = config.site.uid_root
    study_uid, series_uid = new_uid(root), new_uid(root)
    item = WorklistItem(patient_name=QA_PATIENT_NAME, patient_id=f"QA-{detector.serial}"[:64],
                        patient_birth_date=None, patient_sex="", accession_number="", study_instance_uid=study_uid,
                        requested_procedure_id="QA", requested_procedure_description="Detector QA flat fields",
                        sps_id="QA", sps_description="Detector QA flat fields", sps_start=None, modality="DX",
                        scheduled_station_ae="")
    makedirs_durable(directory)
    paths = []
    for n, (frame, exposure) in enumerate(flats, start=1):
        try:
            ei = exposure_index(frame, target_ei=config.exposure.target_ei)
        except DxgateError:
            ei = None
        uid = new_uid(root)
        ds = build_dx(frame, exposure, item, ei, site=config.site, detector=detector,
                      pixel_spacing_mm=pixel_spacing_mm, study_uid=study_uid, series_uid=series_uid,
                      sop_instance_uid=uid, series_number=1, instance_number=n, body_part=QA_BODY_PART,
                      view_position=QA_VIEW, now=now, for_processing=True)
        path = directory / f"{uid}.dcm"
        write_new_file(path, to_bytes(ds))
        paths.append(path)
    LOGGER.info("%d QA flats saved as DX For Processing under %s", len(paths), directory)
    return paths
