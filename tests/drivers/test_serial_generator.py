"""The real pyserial driver against the simulated generator on a pseudo-terminal."""

from __future__ import annotations

import os

import pytest

from drivers.serial_generator import protocol as p
from drivers.serial_generator.driver import SerialGenerator, open_generator
from gateway.errors import DeviceNotFound, GeneratorError
from gateway.ports import Generator
from gateway.types import Technique
from hw_sim.room import SimRoom, kerma_at_detector_ugy


def test_identify_and_technique(generator: SerialGenerator) -> None:
    assert isinstance(generator, Generator)
    assert generator.identity == ("dxgate", "SimGen 65kW", "GEN-0001", "1.0.0")
    assert generator.set_technique(Technique(kvp=70.4, mas=2.004)) == Technique(kvp=70.0, mas=2.0)
    assert generator.status() == ("IDLE", "70.0", "2.00", "0.0")  # version 2 appends tube heat, %


def test_expose_reports_what_was_delivered(room: SimRoom, generator: SerialGenerator) -> None:
    generator.set_technique(Technique(kvp=80, mas=4))
    generator.prepare()
    readback = generator.expose()
    (kvp, mas, kerma), = room.pulses
    assert readback.kvp == pytest.approx(80, rel=0.011)
    assert readback.mas == pytest.approx(4, rel=0.021)
    assert readback.exposure_time_ms == pytest.approx(readback.mas / 200 * 1000, abs=0.1)
    assert kerma == pytest.approx(kerma_at_detector_ugy(kvp, mas))
    assert readback.dap_dgy_cm2 == pytest.approx(kerma * 1e-5 * 43 * 43, rel=1e-3)
    assert generator.status()[0] == "IDLE"  # every exposure needs its own PREP


def test_expose_without_prepare_is_refused(generator: SerialGenerator) -> None:
    with pytest.raises(GeneratorError, match="refused EXPOSE: STATE EXPOSE without PREP"):
        generator.expose()


def test_technique_out_of_range_is_refused(generator: SerialGenerator) -> None:
    with pytest.raises(GeneratorError, match="refused TECH: RANGE"):
        generator.set_technique(Technique(kvp=200, mas=2))


def test_a_garbled_reply_is_detected_and_not_acted_on(room: SimRoom, generator: SerialGenerator) -> None:
    generator.set_technique(Technique(kvp=70, mas=2))
    generator.prepare()
    room.generator.garble_next_reply()
    with pytest.raises(GeneratorError, match=r"garbled reply to EXPOSE: checksum mismatch .* in line "
                                             r"b'\$EONE,") as err:
        generator.expose()
    assert len(str(err.value)) < 200
    assert generator.status()[0] == "IDLE"  # the link works on


def test_an_interlock_fault_is_reported(room: SimRoom, generator: SerialGenerator) -> None:
    room.generator.interlock("door open")
    with pytest.raises(GeneratorError, match="refused PREP: INTERLOCK door open"):
        generator.prepare()
    assert generator.status()[0] == "FAULT"
    room.generator.clear_interlock()
    generator.prepare()
    generator.expose()
    assert len(room.pulses) == 1


def test_a_silent_port_times_out_clearly() -> None:
    master, slave = os.openpty()
    try:
        with pytest.raises(GeneratorError, match=r"no reply to ID within 0.2 s"):
            open_generator(port=os.ttyname(slave), timeout_s=0.2)
    finally:
        os.close(master)
        os.close(slave)


def test_a_missing_port_is_not_found() -> None:
    with pytest.raises(DeviceNotFound, match="cannot open generator port '/nonexistent/ttyX'"):
        open_generator(port="/nonexistent/ttyX")


def test_sentences_follow_the_documented_checksum() -> None:
    assert p.encode("TECH", "70.0", "2.00") == b"$TECH,70.0,2.00*1F\r\n"
    assert p.decode(b"$DONE,70.2,2.01,10.1,0.186*39\r\n") == ["DONE", "70.2", "2.01", "10.1", "0.186"]
    with pytest.raises(p.SentenceError, match="checksum mismatch"):
        p.decode(b"$DONE,70.2,2.01,10.1,0.187*39\r\n")
    with pytest.raises(p.SentenceError, match="no CR LF"):
        p.decode(b"$READY*4B")
    noise = b"\x00garbage" * 100 + b"\r\n"
    with pytest.raises(p.SentenceError) as err:
        p.decode(noise)
    assert len(str(err.value)) < 400 and str(err.value).endswith("...")
    with pytest.raises(ValueError):
        p.encode("TECH", "7*0")
