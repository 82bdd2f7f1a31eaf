"""Journal, state file and rejects file: what a resumed replay skips and keeps."""

from __future__ import annotations

from pathlib import Path

import pytest

from hitstream.replay.journal import Journal, SavedState, StateMismatch, load_state, save_state
from hitstream.replay.rejects import RejectsFile


def test_watermark_advances_only_over_contiguous_done_lines() -> None:
    journal = Journal()
    for line in (1, 2, 3, 5, 6):  # line 4 does not exist (a multi-line CSV record)
        journal.start(line)
    for line in (2, 5, 1):
        journal.finish(line)
    assert journal.snapshot() == (2, [5])
    assert [journal.is_done(n) for n in range(1, 8)] == [True, True, False, False, True, False, False]
    journal.finish(3)
    journal.finish(6)
    assert journal.snapshot() == (6, [])


def test_resumed_journal_keeps_earlier_done_lines_above_the_watermark() -> None:
    journal = Journal(watermark=10, done={12, 15})
    journal.start(11)
    journal.start(13)
    journal.finish(13)
    assert journal.snapshot() == (10, [12, 13, 15])
    journal.finish(11)
    journal.start(14)
    journal.finish(14)
    assert journal.snapshot() == (14, [15])


def test_state_file_round_trip_and_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "in.state.json"
    assert load_state(path) is None
    state = SavedState("abc:10", {"format": "ndjson"}, 7, [9], {"accepted": 6})
    save_state(path, state)
    loaded = load_state(path)
    assert loaded == state
    assert loaded.journal().is_done(9) and not loaded.journal().is_done(8)
    loaded.check_matches("abc:10", {"format": "ndjson"}, path)
    with pytest.raises(StateMismatch, match="different input file"):
        loaded.check_matches("def:10", {"format": "ndjson"}, path)
    with pytest.raises(StateMismatch, match=r"different options \(format\)"):
        loaded.check_matches("abc:10", {"format": "csv"}, path)


def test_rejects_file_is_trimmed_to_the_journal_on_resume(tmp_path: Path) -> None:
    path = tmp_path / "in.rejects.ndjson"
    rejects = RejectsFile(path, keep=None)
    rejects.write(3, 400, "url must be an absolute http or https URL")
    rejects.write(5, None, "not valid JSON")
    rejects.write(9, 404, "Site not found")  # written after the last journal save
    rejects.close()
    with path.open("ab") as file:
        file.write(b'{"line": 12, "sta')  # torn by a kill

    journal = Journal(watermark=6)
    resumed = RejectsFile(path, keep=journal.is_done)
    resumed.write(9, 404, "Site not found")
    resumed.close()
    assert path.read_text().splitlines() == [
        '{"line":3,"status":400,"message":"url must be an absolute http or https URL"}',
        '{"line":5,"status":null,"message":"not valid JSON"}',
        '{"line":9,"status":404,"message":"Site not found"}',
    ]


def test_new_rejects_file_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "in.rejects.ndjson"
    path.write_text('{"line": 1, "status": 400, "message": "old"}\n')
    RejectsFile(path, keep=None).close()
    assert path.read_text() == ""


def test_unreadable_state_file_asks_for_restart(tmp_path: Path) -> None:
    path = tmp_path / "in.state.json"
    path.write_text('{"version": 1, "identity": "x"')
    with pytest.raises(StateMismatch, match="is unreadable .*; use --restart"):
        load_state(path)
