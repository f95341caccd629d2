"""Output files appear whole or not at all (replay decisions, simulator files, audit exports)."""

from __future__ import annotations

from pathlib import Path

import pytest

from courierguard.files import written_whole


def test_a_completed_block_puts_the_file_in_place(tmp_path: Path) -> None:
    target = tmp_path / "decisions.jsonl"
    target.write_bytes(b"old\n")
    with written_whole(target, mode=0o600) as handle:
        handle.write(b"new\n")
        assert target.read_bytes() == b"old\n"  # nothing half-written is visible meanwhile
    assert target.read_bytes() == b"new\n" and target.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["decisions.jsonl"]


@pytest.mark.parametrize("stop", [RuntimeError("lost database"), KeyboardInterrupt()])
def test_a_stopped_block_leaves_nothing_half_written(tmp_path: Path, stop: BaseException) -> None:
    """Ctrl-C in a replay left a partial decisions file, which evaluate scored as complete."""
    old, fresh = tmp_path / "old.jsonl", tmp_path / "fresh.jsonl"
    old.write_bytes(b"kept\n")
    for target in (old, fresh):
        with pytest.raises(type(stop)), written_whole(target) as handle:
            handle.write(b"half")
            raise stop
    assert old.read_bytes() == b"kept\n" and not fresh.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.jsonl"]


def test_a_missing_folder_or_a_folder_as_target_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError), written_whole(tmp_path / "nope" / "x.jsonl"):
        pass  # pragma: no cover - never entered
    (tmp_path / "out").mkdir()
    with pytest.raises(IsADirectoryError, match="out"), written_whole(tmp_path / "out"):
        pass  # pragma: no cover - never entered
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_the_file_and_then_its_folder_reach_the_disk(tmp_path: Path, fsyncs: list[str]) -> None:
    # Renamed before it was on disk, a replay's decisions could be an empty file after a power cut
    # (the crash review); the rename itself needs the folder flushed.
    with written_whole(tmp_path / "out.jsonl") as out:
        out.write(b"{}\n")
    assert fsyncs == ["file", "dir"]
