"""The SQL text of a PostgreSQL batch: rows of the list and entity tables formatted one per
row read the same as the general formatting of every value (which any value takes)."""

from __future__ import annotations

import pytest

from maestro.store import pg_rows


def quote(value: bytes) -> bytes:
    """A stand-in for libpq's escape_literal (only bytes, as libpq takes)."""
    if type(value) is not bytes:
        raise TypeError("bytes expected")
    return b"'" + value.replace(b"'", b"''") + b"'"


@pytest.fixture
def writer() -> pg_rows.Writer:
    return pg_rows.Writer("maestro", quote)


def test_list_rows_read_as_the_general_formatting(writer):
    owners = ["task_1", "task_o'brien", "t\u00e9che"]
    positions = [0, 7, 2**70]
    entries = [b'{"a":1}', b'{"q":"it\'s"}', "caf\u00e9".encode()]
    links = ["sess_1", "sess_'2", "s\u00e9ss"]
    assert writer._list_rows(owners, positions, entries, b"::json") == \
        writer._rows(zip(owners, positions, entries), (b"", b"", b"::json"))
    assert writer._list_rows(owners, positions, links, b"") == \
        writer._rows(zip(owners, positions, links), (b"", b"", b""))
    # An entry given as text rather than bytes takes the general way, with the same result.
    as_text = [e.decode() for e in entries]
    assert writer._list_rows(owners, positions, as_text, b"::json") == \
        writer._rows(zip(owners, positions, entries), (b"", b"", b"::json"))


def test_entity_rows_read_as_the_general_formatting(writer):
    ids = ["task_1", "sess_2"]
    projects = ["proj_'1", None]
    data = [b'{"id":"task_1"}', b'{"id":"sess_2","name":"it\'s"}']
    made = writer._entity_rows(ids, projects, data)
    assert made == writer._rows(zip(ids, projects, data), (b"", b"", b"::json"))
    assert b"NULL" in made
    assert writer._entity_rows(ids, projects, [d.decode() for d in data]) == made
