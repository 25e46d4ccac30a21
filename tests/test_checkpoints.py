"""Complete checkpoints: the marker is written last, resume takes the newest marked one, the rest is cleaned up."""

from __future__ import annotations

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
