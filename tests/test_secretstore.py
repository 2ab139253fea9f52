import stat

from rumistack.secretstore import GENERATORS, load_secrets


def test_secrets_are_generated_once_and_kept(tmp_path):
    first = load_secrets(tmp_path)
    assert set(first) == set(GENERATORS)
    assert load_secrets(tmp_path) == first
    assert stat.S_IMODE((tmp_path / "secrets.env").stat().st_mode) == 0o600


def test_secrets_have_the_lengths_rumitalk_expects(tmp_path):
    values = load_secrets(tmp_path)
    assert len(bytes.fromhex(values["CREDS_KEY"])) == 32
    assert len(bytes.fromhex(values["CREDS_IV"])) == 16
    assert len(bytes.fromhex(values["JWT_SECRET"])) == 32
    assert len({values["JWT_SECRET"], values["JWT_REFRESH_SECRET"]}) == 2


def test_a_missing_secret_is_added_without_touching_the_others(tmp_path):
    (tmp_path / "secrets.env").write_text("JWT_SECRET=keep-me\n")
    values = load_secrets(tmp_path)
    assert values["JWT_SECRET"] == "keep-me"
    assert set(values) == set(GENERATORS)
    assert load_secrets(tmp_path) == values
