"""Routing: each destination gets the spooled objects its filters take, decided at spooling."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from gateway.config import Config, DestinationConfig, from_dict, to_toml
from gateway.errors import ConfigError
from gateway.forward import Forwarder, NoDestination, ObjectSummary, Outcome, check_routable, destinations_for
from gateway.spool import Spool
from tests.forward.conftest import FakeClock
from tests.peers import StoreSCP
from tests.spool.objects import DX_FOR_PRESENTATION, SECONDARY_CAPTURE, TestObject, make_object

DX_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
DOSE_SR = "1.2.840.10008.5.1.4.1.1.88.67"

SITE = [
    DestinationConfig(name="pacs", only_sop_classes=(DX_FOR_PRESENTATION, DOSE_SR)),
    DestinationConfig(name="research", only_sop_classes=(DX_FOR_PROCESSING,)),
    DestinationConfig(name="dose-registry", only_sop_classes=(DOSE_SR,)),
    DestinationConfig(name="chest-ai", only_modalities=("DX",), only_body_parts=("CHEST",),
                      only_sop_classes=(DX_FOR_PRESENTATION,)),
]


@pytest.mark.parametrize("summary, expected", [
    (ObjectSummary(DX_FOR_PRESENTATION, "DX", "CHEST"), ["pacs", "chest-ai"]),
    (ObjectSummary(DX_FOR_PRESENTATION, "DX", "HAND"), ["pacs"]),
    (ObjectSummary(DX_FOR_PROCESSING, "DX", "CHEST"), ["research"]),
    (ObjectSummary(DOSE_SR, "SR", ""), ["pacs", "dose-registry"]),
    (ObjectSummary(DX_FOR_PRESENTATION, "CR", "CHEST"), ["pacs"]),
])
def test_each_destination_takes_what_its_filters_admit(summary: ObjectSummary, expected: list[str]) -> None:
    assert destinations_for(SITE, summary) == expected


def test_no_filter_takes_everything_and_nothing_taken_is_an_error() -> None:
    assert destinations_for([DestinationConfig(name="a"), DestinationConfig(name="b")],
                            ObjectSummary("1.2.3", "OT", "")) == ["a", "b"]
    with pytest.raises(NoDestination, match="SOP class 1.2.840.10008.5.1.4.1.1.7"):
        destinations_for(SITE, ObjectSummary(SECONDARY_CAPTURE, "OT", ""))
    with pytest.raises(NoDestination):  # the preflight says the same before the tube fires
        check_routable(SITE[1:2], ObjectSummary(DX_FOR_PRESENTATION, "DX", "CHEST"))


def test_summary_of_a_dataset_built_by_dxgate() -> None:
    ds = dcmread(io.BytesIO(make_object(seed=500).data))
    assert ObjectSummary.of(ds) == ObjectSummary(DX_FOR_PRESENTATION, "DX", "CHEST")


def test_routing_keys_are_validated_and_documented() -> None:
    cfg = from_dict({"destinations": [{"name": "pacs", "only_sop_classes": [DX_FOR_PRESENTATION],
                                       "only_modalities": ["DX"], "only_body_parts": ["CHEST", "HAND"]}]})
    assert cfg.destinations[0].only_body_parts == ("CHEST", "HAND")
    text = to_toml(Config())
    for key in ("only_sop_classes", "only_modalities", "only_body_parts", "transfer_syntax", "tls"):
        assert f"\n{key} = " in text
    for raw, message in (({"only_sop_classes": ["DX"]}, "not a SOP Class UID"),
                         ({"only_modalities": ["dx"]}, "code string"),
                         ({"only_body_parts": ["Chest"]}, "CHEST"),
                         ({"transfer_syntax": "jpeg-lossy"}, "transfer_syntax")):
        with pytest.raises(ConfigError, match=message):
            from_dict({"destinations": [raw]})


# --- with the spool and real archives ------------------------------------------------------


@pytest.fixture
def two_archives(tmp_path: Path) -> Iterator[dict[str, StoreSCP]]:
    scps = {}
    for name in ("pacs", "other"):
        (tmp_path / name).mkdir()
        scps[name] = StoreSCP(tmp_path / name).start()
    yield scps
    for scp in scps.values():
        scp.stop()


def spool_routed(spool: Spool, dests: list[DestinationConfig], o: TestObject) -> list[str]:
    names = destinations_for(dests, ObjectSummary.of(dcmread(io.BytesIO(o.data), stop_before_pixels=True)))
    spool.put(o.data, sop_instance_uid=o.sop_instance_uid, sop_class_uid=o.sop_class_uid,
              study_instance_uid=o.study_instance_uid, accession_number=o.accession_number, destinations=names)
    return names


@pytest.mark.peers
def test_each_archive_receives_exactly_the_objects_routed_to_it(spool: Spool, clock: FakeClock,
                                                                two_archives: dict[str, StoreSCP]) -> None:
    def dest(name: str, **kw: Any) -> DestinationConfig:
        scp = two_archives[name]
        return DestinationConfig(name=name, host="127.0.0.1", port=scp.port, called_ae=scp.aet, timeout_s=20.0, **kw)

    dests = [dest("pacs", only_sop_classes=(DX_FOR_PRESENTATION,)), dest("other", only_modalities=("OT",))]
    dx = [make_object(seed=510 + i) for i in range(3)]
    sc = [make_object(seed=520 + i, sop_class_uid=SECONDARY_CAPTURE) for i in range(2)]
    assert all(spool_routed(spool, dests, o) == ["pacs"] for o in dx)
    assert all(spool_routed(spool, dests, o) == ["other"] for o in sc)
    assert {d.destination for o in dx + sc for d in spool.deliveries(o.sop_instance_uid)} == {"pacs", "other"}
    for o in dx:
        assert [d.destination for d in spool.deliveries(o.sop_instance_uid)] == ["pacs"]
    fwd = Forwarder(spool, dests, calling_ae="DXGATE", clock=clock, rng=random.Random(5))
    assert [r.outcome for r in fwd.forward_due()] == [Outcome.SENT] * 5
    received = {name: sorted(str(dcmread(p).SOPInstanceUID) for p in scp.files())
                for name, scp in two_archives.items()}
    assert received == {"pacs": sorted(o.sop_instance_uid for o in dx),
                        "other": sorted(o.sop_instance_uid for o in sc)}
