"""The one atomic writer: whole files or none, the umask's mode, strict JSON, no temporary files left."""

from __future__ import annotations

import json
import os
import stat

import pytest

from deeprun.files import (
    append_line,
    atomic_open,
    json_text,
    write_figure,
    write_json,
    write_lines,
    write_text,
)


@pytest.fixture
def umask_027():
    previous = os.umask(0o027)
    yield 0o640
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_writer_gives_the_umasks_mode(tmp_path, umask_027):
    from matplotlib.figure import Figure

    figure = Figure()
    figure.subplots().plot([0, 1], [1, 0])
    written = [
        write_text(tmp_path / "a.txt", "text"),
        write_lines(tmp_path / "c.jsonl", ["1\n", "2\n"]),
        write_json(tmp_path / "d" / "e.json", {"x": 1}),
        write_figure(figure, tmp_path / "f.png"),
    ]
    append_line(tmp_path / "g.jsonl", "{}\n")
    for path in [*written, tmp_path / "g.jsonl"]:
        assert mode(path) == umask_027, path  # not mkstemp's 0600
    assert (tmp_path / "f.png").read_bytes().startswith(b"\x89PNG")


def test_an_error_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = write_text(tmp_path / "summary.json", "old")
    with pytest.raises(RuntimeError), atomic_open(target) as file:
        file.write("half of the new")
        raise RuntimeError("disk fault")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_json_is_strict(tmp_path):
    payload = {"loss": float("nan"), "rows": [float("inf"), 1.5, -float("inf")], "ok": True}
    text = json_text(payload)
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"loss": None, "rows": [None, 1.5, None], "ok": True}
    assert json.loads(write_json(tmp_path / "s.json", payload).read_text()) == json.loads(text)
