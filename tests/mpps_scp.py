"""A Modality Performed Procedure Step SCP for the tests (pynetdicom), strict about PS3.4 Annex F:
which attributes N-CREATE must carry, which N-SET may change, the state machine (IN PROGRESS ->
COMPLETED | DISCONTINUED, nothing after), and what a final state needs. It keeps every message
it accepted, in order, as the truth the tests compare with."""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

CREATE_TYPE1 = ("PerformedProcedureStepID", "PerformedStationAETitle", "PerformedProcedureStepStartDate",
                "PerformedProcedureStepStartTime", "PerformedProcedureStepStatus", "Modality",
                "ScheduledStepAttributesSequence")
CREATE_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "ReferencedPatientSequence",
                "PerformedStationName", "PerformedLocation", "PerformedProcedureStepDescription",
                "PerformedProcedureTypeDescription", "ProcedureCodeSequence", "PerformedProcedureStepEndDate",
                "PerformedProcedureStepEndTime", "StudyID", "PerformedProtocolCodeSequence", "PerformedSeriesSequence")
# Table F.7.2-1: what an N-SET may carry (everything else is fixed at N-CREATE).
SET_ALLOWED = {"SpecificCharacterSet", "PerformedProcedureStepStatus", "PerformedProcedureStepEndDate",
               "PerformedProcedureStepEndTime", "PerformedProcedureStepDescription",
               "PerformedProcedureTypeDescription", "ProcedureCodeSequence", "PerformedProtocolCodeSequence",
               "PerformedSeriesSequence", "PerformedProcedureStepDiscontinuationReasonCodeSequence",
               "TotalNumberOfExposures", "ExposureDoseSequence", "ImageAndFluoroscopyAreaDoseProduct",
               "CommentsOnRadiationDose", "EntranceDoseInmGy", "DistanceSourceToDetector"}
SERIES_TYPE1 = ("SeriesInstanceUID", "ProtocolName")
IMAGE_CLASSES = {"1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1.1"}  # DX For Presentation/Processing
SERIES_TYPE2 = ("PerformingPhysicianName", "OperatorsName", "SeriesDescription", "RetrieveAETitle",
                "ReferencedImageSequence", "ReferencedNonImageCompositeSOPInstanceSequence")


@dataclass
class MppsScp:
    ae_title: str = "RIS"
    refuse_create_with: int | None = None  # a status to refuse every N-CREATE with
    steps: dict[str, Dataset] = field(default_factory=dict)  # the SCP's view: each step as it is now
    log: list[tuple[str, str, Dataset]] = field(default_factory=list)  # accepted (kind, uid, dataset)
    refusals: list[tuple[str, int, str]] = field(default_factory=list)
    port: int = 0
    _server: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, port: int = 0) -> MppsScp:
        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(ModalityPerformedProcedureStep)
        self._server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[
            (evt.EVT_N_CREATE, self._create), (evt.EVT_N_SET, self._set)])
        self.port = self._server.server_address[1]
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _refuse(self, kind: str, code: int, why: str) -> tuple[Dataset, None]:
        self.refusals.append((kind, code, why))
        status = Dataset()
        status.Status = code
        status.ErrorComment = why[:64]
        return status, None

    def _create(self, event: evt.Event) -> tuple[Any, Dataset | None]:
        req = event.request
        uid = str(req.AffectedSOPInstanceUID or "")
        ds = event.attribute_list
        with self._lock:
            if self.refuse_create_with is not None:
                return self._refuse("create", self.refuse_create_with, "refused by the test")
            if not uid:
                return self._refuse("create", 0x0106, "the SCU must give the SOP Instance UID")
            if uid in self.steps:
                return self._refuse("create", 0x0111, "duplicate SOP instance")
            for kw in CREATE_TYPE1:
                if kw not in ds or ds[kw].value in (None, "", []):
                    return self._refuse("create", 0x0120, f"missing {kw}")
            for kw in CREATE_TYPE2:
                if kw not in ds:
                    return self._refuse("create", 0x0120, f"missing {kw}")
            if ds.PerformedProcedureStepStatus != "IN PROGRESS":
                return self._refuse("create", 0x0106, "N-CREATE status must be IN PROGRESS")
            if not ds.ScheduledStepAttributesSequence[0].get("StudyInstanceUID"):
                return self._refuse("create", 0x0120, "missing StudyInstanceUID in the scheduled step")
            self.steps[uid] = copy.deepcopy(ds)  # the log keeps the message as it came
            self.log.append(("create", uid, ds))
        return 0x0000, ds

    def _set(self, event: evt.Event) -> tuple[Any, Dataset | None]:
        req = event.request
        uid = str(req.RequestedSOPInstanceUID or "")
        mod = event.modification_list
        with self._lock:
            step = self.steps.get(uid)
            if step is None:
                return self._refuse("set", 0x0112, "no such performed procedure step")
            if step.PerformedProcedureStepStatus != "IN PROGRESS":
                return self._refuse("set", 0x0110, "Performed Procedure Step may no longer be updated")
            extra = sorted(e.keyword for e in mod if e.keyword not in SET_ALLOWED)
            if extra:
                return self._refuse("set", 0x0106, f"not settable: {', '.join(extra)}")
            state = mod.get("PerformedProcedureStepStatus", step.PerformedProcedureStepStatus)
            if state not in ("IN PROGRESS", "COMPLETED", "DISCONTINUED"):
                return self._refuse("set", 0x0106, f"status {state}")
            if state != "IN PROGRESS":
                if not mod.get("PerformedProcedureStepEndDate") or not mod.get("PerformedProcedureStepEndTime"):
                    return self._refuse("set", 0x0120, "a final state needs its end date and time")
                series = mod.get("PerformedSeriesSequence", [])
                if state == "COMPLETED" and not series:
                    return self._refuse("set", 0x0120, "COMPLETED needs a performed series")
                for s in series:
                    for kw in SERIES_TYPE1:
                        if not s.get(kw):
                            return self._refuse("set", 0x0120, f"missing {kw} in a performed series")
                    for kw in SERIES_TYPE2:
                        if kw not in s:
                            return self._refuse("set", 0x0120, f"missing {kw} in a performed series")
                    for kw in ("ReferencedImageSequence", "ReferencedNonImageCompositeSOPInstanceSequence"):
                        for ref in s.get(kw) or []:
                            if not ref.get("ReferencedSOPClassUID") or not ref.get("ReferencedSOPInstanceUID"):
                                return self._refuse("set", 0x0120, f"a reference in {kw} lacks its UIDs")
                    if any(str(r.ReferencedSOPClassUID) in IMAGE_CLASSES
                           for r in s.get("ReferencedNonImageCompositeSOPInstanceSequence") or []):
                        return self._refuse("set", 0x0106, "an image listed as a non-image object")
            for elem in mod:
                step[elem.tag] = elem
            self.log.append(("set", uid, mod))
        return 0x0000, mod
