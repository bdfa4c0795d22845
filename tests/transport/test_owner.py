"""parse_owner and parse_mode: what -o and -m accept, and one-line refusals."""

from __future__ import annotations

import grp
import pwd

import pytest

from capsudo.transport import DEFAULT_MODE, Owner, parse_mode, parse_owner


def _some_user() -> pwd.struct_passwd:
    return pwd.getpwnam("root")


def _unused_id(lookup) -> int:
    for candidate in range(4_000_000, 4_001_000):
        try:
            lookup(candidate)
        except KeyError:
            return candidate
    pytest.skip("no unused id found")


def test_user_brings_its_primary_group():
    user = _some_user()
    assert parse_owner(user.pw_name) == Owner(user.pw_uid, user.pw_gid)


def test_nobody_has_its_own_ids():
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    assert parse_owner("nobody") == Owner(nobody.pw_uid, nobody.pw_gid)


def test_user_and_group():
    user = _some_user()
    group = grp.getgrgid(user.pw_gid)
    assert parse_owner(f"{user.pw_name}:{group.gr_name}") == Owner(user.pw_uid, group.gr_gid)
    try:
        other = grp.getgrnam("nogroup")
    except KeyError:
        other = grp.getgrnam("nobody")
    # A named group overrides the user's primary group.
    assert parse_owner(f"{user.pw_name}:{other.gr_name}") == Owner(user.pw_uid, other.gr_gid)


def test_group_alone_keeps_the_user():
    group = grp.getgrgid(0)
    assert parse_owner(f":{group.gr_name}") == Owner(None, group.gr_gid)
    assert parse_owner(":4321") == Owner(None, 4321)


def test_numeric_ids():
    root = pwd.getpwuid(0)
    assert parse_owner("0") == Owner(0, root.pw_gid)
    assert parse_owner("0:0") == Owner(0, 0)
    assert parse_owner("1234:5678") == Owner(1234, 5678)


def test_numeric_uid_needs_no_passwd_entry():
    uid = _unused_id(pwd.getpwuid)
    assert parse_owner(str(uid)) == Owner(uid, None)
    gid = _unused_id(grp.getgrgid)
    assert parse_owner(f"{uid}:{gid}") == Owner(uid, gid)


@pytest.mark.parametrize("text, fragment", [
    ("no-such-user-cs", "unknown user 'no-such-user-cs'"),
    ("no-such-user-cs:root", "unknown user"),
    ("root:no-such-group-cs", "unknown group 'no-such-group-cs'"),
    (":no-such-group-cs", "unknown group"),
    ("", "invalid owner"),
    (":", "invalid owner"),
    ("root:", "empty group"),
])
def test_bad_owner_is_a_one_line_value_error(text, fragment):
    with pytest.raises(ValueError) as excinfo:
        parse_owner(text)
    message = str(excinfo.value)
    assert fragment in message
    assert "\n" not in message


@pytest.mark.parametrize("text, mode", [
    ("0770", 0o770),
    ("770", 0o770),
    ("660", 0o660),
    ("0660", 0o660),
    ("0", 0),
    ("700", 0o700),
    ("07777", 0o7777),
    ("7777", 0o7777),
    ("00000", 0),
])
def test_good_modes(text, mode):
    assert parse_mode(text) == mode


def test_default_mode():
    assert DEFAULT_MODE == 0o770 == parse_mode("0770")


@pytest.mark.parametrize("text", [
    "8", "9", "10000", "17777", "077777", "-1", "", "rwx", "0o7", "0x1ff", " 770", "770 ", "+770", "7_7", "٧٧٠",
])
def test_bad_modes_are_a_one_line_value_error(text):
    with pytest.raises(ValueError) as excinfo:
        parse_mode(text)
    message = str(excinfo.value)
    assert "mode" in message
    assert "\n" not in message


@pytest.mark.parametrize("text", ["٧٧", "²", ":٧", "0:²", "１２"])
def test_only_ascii_digits_make_a_numeric_id(text):
    # Other scripts' digits are names (and unknown here), never ids.
    with pytest.raises(ValueError, match="unknown (user|group)"):
        parse_owner(text)
