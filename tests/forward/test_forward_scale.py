"""Zero loss at scale, short version: 200 images forwarded to DCMTK storescp by a process
killed with SIGKILL three times mid-stream (bench/forward_scale.py runs thousands)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.forward.chaos import STORESCP_ARGS, make_images, run_chaos
from tests.peers import StoreSCP

pytestmark = pytest.mark.peers


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[StoreSCP]:
    (tmp_path / "archive").mkdir()
    scp = StoreSCP(tmp_path / "archive", args=STORESCP_ARGS).start()
    yield scp
    scp.stop()


@pytest.mark.timeout(300)
def test_200_images_three_kills_nothing_lost_duplicated_or_corrupted(tmp_path: Path, archive: StoreSCP) -> None:
    images = list(make_images(200, seed=11))
    work = tmp_path / "work"
    work.mkdir()
    tally = run_chaos(work, images, kills=3, port=archive.port, archive_dir=archive.out_dir, seed=11,
                      timeout_s=200)
    assert tally.kills == 3 and tally.kills_mid_stream == 3, tally
    assert tally.runs == 4
    assert (tally.lost, tally.sent_but_missing, tally.duplicated_in_content, tally.corrupted, tally.unexpected,
            tally.not_sent_in_queue) == (0, 0, 0, 0, 0, 0), tally
    assert tally.archive_files >= 200  # a copy per reception: resends after an abort are counted, identical
