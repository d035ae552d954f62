"""Settings: TOML + env overrides, path anchoring, one-line errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from librarian_dagster.settings import CONFIG_ENV, SettingsError, load_settings
from tests.conftest import write_config


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("LIBRARIAN_"):
            monkeypatch.delenv(key)


def test_embedded_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.config_file is None
    assert settings.data_dir == tmp_path / ".librarian"
    assert settings.catalogue_url == f"sqlite:///{tmp_path / '.librarian' / 'catalogue.sqlite'}"
    assert [(s.name, s.kind, s.root) for s in settings.stores] == [
        ("main", "local", tmp_path / ".librarian/stores/main")
    ]
    assert settings.api.public_url == "http://127.0.0.1:8080"
    assert settings.checksum.algorithm == "xxh3_128"
    assert settings.transfer.max_active_transfers == 90


def test_file_values_anchor_at_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    site.mkdir()
    path = write_config(
        site,
        """
name = "site-a"
data_dir = "state"
database_url = "sqlite:///state/cat.sqlite"
[api]
port = 9000
[[stores]]
name = "main"
root = "stores/main"
inbox = "incoming"
rolling = { keep_days = 30, min_copies_elsewhere = 2 }
[[stores]]
name = "drive1"
kind = "sneaker"
root = "/mnt/drive1"
ingestable = false
[globus]
client_id = "abc"
collection_id = "def"
""",
    )
    monkeypatch.chdir(tmp_path)  # a different working directory must not matter
    settings = load_settings(path)
    assert settings.name == "site-a"
    assert settings.data_dir == site / "state"
    assert settings.catalogue_url == f"sqlite:///{site / 'state/cat.sqlite'}"
    assert settings.api.public_url == "http://127.0.0.1:9000"
    main, drive = settings.stores
    assert main.root == site / "stores/main" and main.inbox == site / "incoming"
    assert main.rolling is not None and main.rolling.min_copies_elsewhere == 2
    assert drive.kind == "sneaker" and drive.root == Path("/mnt/drive1") and not drive.ingestable
    assert (
        settings.globus is not None and settings.globus.client_secret_env == "GLOBUS_CLIENT_SECRET"
    )


def test_env_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path, 'name = "from-file"\n[api]\nport = 9000\n')
    monkeypatch.setenv("LIBRARIAN_NAME", "from-env")
    monkeypatch.setenv("LIBRARIAN_API__PORT", "9100")
    monkeypatch.setenv("LIBRARIAN_TRANSFER__BATCH_MAX", "512")
    settings = load_settings(path)
    assert settings.name == "from-env"
    assert settings.api.port == 9100
    assert settings.transfer.batch_max == 512


def test_config_path_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path, 'name = "via-env-path"\n')
    monkeypatch.setenv(CONFIG_ENV, str(path))
    assert load_settings().name == "via-env-path"
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "missing.toml"))
    with pytest.raises(SettingsError, match="config file not found"):
        load_settings()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            '[[stores]]\nname = "x"\nkind = "tape"\nroot = "r"\n',
            r"stores\.0\.kind: Input should be 'local' or 'sneaker'",
        ),
        ('[[stores]]\nname = "x"\n', r"stores\.0\.root: Field required"),
        (
            '[[stores]]\nname = "x"\nroot = "a"\n[[stores]]\nname = "x"\nroot = "b"\n',
            r"duplicate store name 'x'",
        ),
        ('nmae = "typo"\n', r"nmae: Extra inputs are not permitted"),
        ("[api]\nport = 70000\n", r"api\.port: Input should be less than or equal to 65535"),
        ('[checksum]\nalgorithm = "crc32"\n', r"checksum\.algorithm: unknown algorithm 'crc32'"),
        ("[transfer]\nbatch_min = 2000\n", r"transfer: batch_min must not exceed batch_max"),
        ('name = "unterminated\n', r"librarian\.toml: "),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, body: str, expected: str) -> None:
    path = write_config(tmp_path, body)
    with pytest.raises(SettingsError, match=expected) as info:
        load_settings(path)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_secret_key_from_env_or_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(write_config(tmp_path, 'data_dir = "d"\n'))
    assert settings.secret_key() is None
    settings.data_dir.mkdir()
    settings.secret_key_file.write_text("from-file\n")
    assert settings.secret_key() == b"from-file"
    monkeypatch.setenv("LIBRARIAN_SECRET_KEY", "from-env")
    assert settings.secret_key() == b"from-env"
