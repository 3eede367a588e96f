"""UIDs under the site root: valid, unique, never longer than 64 characters."""

from __future__ import annotations

import pytest

from gateway.dicom import is_valid_uid, new_uid
from gateway.errors import ConfigError


def test_uuid_root_gives_ps35_b2_form() -> None:
    uid = new_uid("2.25")
    assert uid.startswith("2.25.") and is_valid_uid(uid)
    assert 0 < int(uid[5:]) < 2**128 and str(int(uid[5:])) == uid[5:]


@pytest.mark.parametrize("root", ["1.2.826.0.1.3680043.10.543", "1.2", "1.3.6.1.4.1.9590.100.1.2.123456789012345"])
def test_other_roots_fill_up_to_64_characters(root: str) -> None:
    uids = {new_uid(root) for _ in range(500)}
    assert len(uids) == 500
    for uid in uids:
        assert uid.startswith(root + ".") and is_valid_uid(uid) and len(uid) == 64


@pytest.mark.parametrize("root, msg", [("1.2.03", "not a valid"), ("1.2.", "not a valid"), ("abc", "not a valid"),
                                       ("1." + "2" * 50, "at least")])
def test_refuses_bad_roots(root: str, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        new_uid(root)
