import stat

import pytest
from passlib.apache import HtpasswdFile

from rumistack.errors import UserError
from rumistack.users import UserFile, WeakPassword

GOOD = "correct horse battery"


@pytest.fixture
def users(tmp_path):
    return UserFile(tmp_path / "state" / "htpasswd")


def test_added_user_is_stored_as_a_bcrypt_2y_hash_that_verifies(users):
    users.add("alice", GOOD)
    line = users.path.read_text().strip()
    name, hashed = line.split(":", 1)
    assert name == "alice"
    assert hashed.startswith("$2y$")
    assert GOOD not in line
    assert HtpasswdFile(str(users.path)).check_password("alice", GOOD)


def test_user_file_is_private_to_its_owner(users):
    users.add("alice", GOOD)
    assert stat.S_IMODE(users.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(users.path.parent.stat().st_mode) == 0o700


def test_names_are_listed_sorted(users):
    for name in ("carol", "alice", "bob"):
        users.add(name, GOOD)
    assert users.names() == ["alice", "bob", "carol"]


def test_adding_an_existing_user_is_refused(users):
    users.add("alice", GOOD)
    with pytest.raises(UserError, match="passwd"):
        users.add("alice", GOOD)


def test_delete_removes_only_that_user(users):
    users.add("alice", GOOD)
    users.add("bob", GOOD)
    users.delete("bob")
    assert users.names() == ["alice"]


def test_deleting_an_unknown_user_is_refused(users):
    with pytest.raises(UserError, match="no user"):
        users.delete("nobody")


def test_set_password_replaces_the_hash(users):
    users.add("alice", GOOD)
    users.set_password("alice", "another long passphrase")
    check = HtpasswdFile(str(users.path))
    assert check.check_password("alice", "another long passphrase")
    assert not check.check_password("alice", GOOD)


@pytest.mark.parametrize("name", ["", "a:b", "tab\there", "new\nline", "del\x7f", "x" * 256, "é" * 128])
def test_unusable_user_names_are_refused(users, name):
    with pytest.raises(UserError):
        users.add(name, GOOD)


def test_name_of_255_bytes_is_accepted(users):
    users.add("x" * 255, GOOD)
    assert users.names() == ["x" * 255]


def test_password_over_72_bytes_is_refused_not_truncated(users):
    with pytest.raises(UserError, match="72 bytes"):
        users.add("alice", "p" * 73)
    assert users.names() == []


def test_empty_password_is_refused(users):
    with pytest.raises(UserError, match="empty"):
        users.add("alice", "")


def test_short_password_is_accepted_with_a_warning(users):
    with pytest.warns(WeakPassword):
        users.add("alice", "short")
    assert users.names() == ["alice"]


def test_malformed_line_is_an_error_naming_the_line(users):
    users.path.parent.mkdir(parents=True)
    users.path.write_text("alice:$2y$12$abc\nthis line has no separator\n")
    with pytest.raises(UserError, match="line 2"):
        users.names()
