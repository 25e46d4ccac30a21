"""Complete checkpoints: the marker is written last, resume takes the newest marked one, the rest is cleaned up."""

from __future__ import annotations

import pytest

from align.runtime import checkpoints


def make(run_dir, step: int, complete: bool):
    path = run_dir / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"weights")
    if complete:
        checkpoints.mark_complete(path, metrics_rows=step)
    return path


def test_resume_point_skips_and_removes_checkpoints_cut_short(tmp_path, capsys):
    make(tmp_path, 10, complete=True)
    make(tmp_path, 20, complete=True)
    cut_short = make(tmp_path, 30, complete=False)
    assert checkpoints.resume_point(tmp_path, resume=True) == tmp_path / "checkpoint-20"
    assert not cut_short.exists()
    assert f"ignoring and removing {cut_short}" in capsys.readouterr().out


def test_resume_point_of_an_empty_or_missing_run_is_none(tmp_path):
    assert checkpoints.resume_point(tmp_path, resume=True) is None
    assert checkpoints.resume_point(tmp_path / "missing", resume=True) is None


def test_starting_over_removes_an_earlier_runs_checkpoints(tmp_path):
    make(tmp_path, 750, complete=True)  # a later resume must not pick this up as if the new run had written it
    assert checkpoints.resume_point(tmp_path, resume=False) is None
    assert checkpoints.numbered(tmp_path) == []


def test_numbered_sorts_by_step_not_by_name(tmp_path):
    for step in (100, 20, 3):
        make(tmp_path, step, complete=True)
    (tmp_path / "checkpoint-x").mkdir()
    assert [p.name for p in checkpoints.numbered(tmp_path)] == ["checkpoint-3", "checkpoint-20", "checkpoint-100"]


def test_remove_old_keeps_the_newest_complete_ones(tmp_path):
    for step in (1, 2, 3):
        make(tmp_path, step, complete=True)
    newest_unfinished = make(tmp_path, 4, complete=False)  # being written: neither counted nor removed
    checkpoints.remove_old(tmp_path, keep=2)
    assert [p.name for p in checkpoints.numbered(tmp_path)] == ["checkpoint-2", "checkpoint-3", "checkpoint-4"]
    assert newest_unfinished.exists()
    checkpoints.remove_old(tmp_path, keep=0)  # 0 keeps all
    assert len(checkpoints.numbered(tmp_path)) == 3


def test_write_atomic_replaces_the_whole_file_or_leaves_the_old_one(tmp_path):
    """What the pipeline and the report trust as finished (metrics.json, eval.json) is never seen half written."""
    path = tmp_path / "metrics.json"
    checkpoints.write_atomic(path, '{"old": 1}\n')
    with pytest.raises(TypeError):
        checkpoints.write_atomic(path, object())  # a write that fails midway, as a kill would stop it
    assert path.read_text() == '{"old": 1}\n'
    checkpoints.write_atomic(path, '{"new": 2}\n')
    assert path.read_text() == '{"new": 2}\n'


def test_resume_forgets_a_metrics_line_cut_short_by_the_kill(tmp_path, capsys):
    from align.runtime.runs import MetricsLog

    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.write(1, {"loss": 1.0})
    log.write(2, {"loss": 0.5})
    with open(log.path, "a") as f:
        f.write('{"step": 3, "lo')
    log.keep_first(2)
    log.write(3, {"loss": 0.25})
    assert [row["step"] for row in log.rows()] == [1, 2, 3]
    assert f"left out line 3 of {log.path}" in capsys.readouterr().err
