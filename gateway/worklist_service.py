"""The worklist as the console sees it: the RIS's answer, or its last answer while it is down."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from gateway.config import Config
from gateway.errors import WorklistError
from gateway.types import WorklistItem
from gateway.worklist import load_cache_with_time, query_worklist_result, save_cache, should_replace_cache

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorklistView:
    """The scheduled steps the console shows, and whether they are live or from the offline cache."""

    items: list[WorklistItem]
    source: str  # "ris" (answered now) or "cache" (the RIS is unreachable)
    as_of: datetime | None
    error: str = ""  # why the RIS could not be asked, when source is "cache"


class WorklistService:
    def __init__(self, config: Config, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._config = config
        self._clock = clock
        self.last: WorklistView | None = None  # the day's list as last shown (live or cached)

    def reconfigure(self, config: Config) -> None:
        """Use new worklist settings (SIGHUP reload)."""
        self._config = config

    def worklist(self, on: date | None = None, *, patient_id: str = "", accession_number: str = "") -> WorklistView:
        """Ask the RIS (for the day, or for one patient or accession); while it is unreachable,
        show its last answer for the day, filtered the same way and marked as cached."""
        wl = self._config.worklist
        cache = self._config.path(wl.cache)
        now = self._clock()
        search = bool(patient_id or accession_number)
        try:
            # the matching keys are the site's choice: the station AE only where the RIS fills it in
            result = query_worklist_result(
                host=wl.host, port=wl.port, called_ae=wl.called_ae, calling_ae=self._config.site.ae_title,
                modality=wl.modality, station_ae=self._config.site.ae_title if wl.match_station_ae else "",
                station_name=wl.station_name, on=on or now.astimezone().date(), match_date=wl.date_range == "today",
                days_before=wl.days_before, days_ahead=wl.days_ahead, patient_id=patient_id,
                accession_number=accession_number, timeout_s=wl.timeout_s, max_query_s=wl.max_query_s,
                max_answers=wl.max_answers)
        except WorklistError as exc:
            if not cache.exists():
                raise
            cached, saved_at = load_cache_with_time(cache)
            cached = [i for i in cached if (not patient_id or i.patient_id == patient_id)
                      and (not accession_number or i.accession_number == accession_number)]
            LOGGER.warning("worklist: RIS unreachable (%s); showing %d cached step(s) from %s",
                           exc, len(cached), saved_at.isoformat() if saved_at else "an unknown time")
            view = WorklistView(items=cached, source="cache", as_of=saved_at, error=str(exc))
            if not search:
                self.last = view
            return view
        items = list(result.items)
        try:
            # a search answer is not the day's list, and an answer that kept nothing because every
            # entry was malformed is no list at all: either leaves the cache whole
            if not search and should_replace_cache(result):
                save_cache(items, cache, saved_at=now)
            elif not search:
                LOGGER.error("worklist: all %d answer(s) were malformed; the offline cache is kept", result.answers)
        except (OSError, WorklistError) as exc:  # the live answer still stands; only the offline copy is stale
            LOGGER.error("worklist cache %s could not be saved: %s", cache, exc)
        view = WorklistView(items=items, source="ris", as_of=now)
        if not search:
            self.last = view
        return view

