"""Catalogue names: what every layer (API, CLI, stores, Dagster partitions) may accept."""

from __future__ import annotations

import pytest

from librarian_dagster.storage.names import (
    MAX_NAME_BYTES,
    MAX_SEGMENT_BYTES,
    InvalidNameError,
    validate_name,
)

GOOD_NAMES = [
    "book",
    "2026/11/25/book_0001",
    "a/b/c.tar",
    "run-12.h5",
    ".hidden",
    "..x",
    "x..",
    "a b/c d",
    "café/naïve",
    "日本/データ",
    "x" * MAX_SEGMENT_BYTES,
    "/".join(["y" * 200] * 5),
    ("é" * 127) + "x",
]

BAD_NAMES = {
    "empty": "",
    "dotdot": "../x",
    "absolute": "/etc/x",
    "climb": "a/../../x",
    "trailing dotdot": "a/..",
    "double slash": "a//b",
    "trailing slash": "a/",
    "only slash": "/",
    "dot": ".",
    "dot segment": "a/./b",
    "NUL": "a\0b",
    "backslash": "a\\b",
    "long segment": "x" * 300,
    "long multibyte segment": "é" * 128,
    "long name": "/".join(["y" * 250] * 5),
    "comma": "a,b",
    "leading space": " a",
    "trailing space": "a/b ",
    "leading tab": "a/\tb",
    "whitespace segment": "a/ /b",
    "no-break space": "a\u00a0",
    "newline": "a\nb",
    "escape": "a\x1b[31m",
    "DEL": "a\x7fb",
    "C1 control": "a\x9bb",
    "dagster range": "a...b",
    "triple dot segment": "a/...",
    "lone surrogate": "a\udcffb",
}


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_names_are_returned_unchanged(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidNameError) as caught:
        validate_name(name)
    message = str(caught.value)
    assert message
    assert "\n" not in message
    assert "\0" not in message


def test_limits_are_counted_in_utf8_bytes() -> None:
    assert MAX_SEGMENT_BYTES == 255
    assert MAX_NAME_BYTES == 1024
    validate_name("é" * 127)  # 254 bytes
    with pytest.raises(InvalidNameError, match="255"):
        validate_name("é" * 128)  # 256 bytes


def test_name_of_exactly_max_bytes_is_accepted() -> None:
    segments = ["z" * 250] * 4
    name = "/".join(segments)
    name += "/" + "z" * (MAX_NAME_BYTES - len(name) - 1)
    assert len(name.encode()) == MAX_NAME_BYTES
    assert validate_name(name) == name
    with pytest.raises(InvalidNameError, match="1024"):
        validate_name(name + "z")


def test_invalid_name_error_is_a_value_error() -> None:
    assert issubclass(InvalidNameError, ValueError)


def test_non_strings_are_refused() -> None:
    with pytest.raises(InvalidNameError, match="str"):
        validate_name(b"a/b")  # type: ignore[arg-type]
    with pytest.raises(InvalidNameError):
        validate_name(None)  # type: ignore[arg-type]


def test_messages_name_the_problem() -> None:
    cases = {
        "a//b": "empty segment",
        "/x": "absolute",
        "a/../b": "'..'",
        "a,b": "comma",
        "a\\b": "backslash",
        "a\0b": "control character",
    }
    for name, fragment in cases.items():
        with pytest.raises(InvalidNameError, match=fragment):
            validate_name(name)


def test_long_names_are_shortened_in_messages() -> None:
    with pytest.raises(InvalidNameError) as caught:
        validate_name("q" * 5000)
    assert len(str(caught.value)) < 200
