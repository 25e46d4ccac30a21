"""align.report on damaged run directories: one `error:` line naming the file and what to do, no traceback; a
metrics.jsonl whose last line a kill cut short is read without that line."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from align.report import main
from align.runtime.runs import read_jsonl

UPDATE = {"episodes": 32, "objective/kl": 0.5, "objective/score": 0.2, "time/update_s": 2.0}


@pytest.fixture
def run(tmp_path):
    """An evaluated run, outputs/tiny: eval-baseline/ with eval.json and its config, ppo-baseline/metrics.jsonl."""
    run_dir, ppo = tmp_path / "tiny", {"gold_score": 0.8, "rm_score": 0.4, "kl": 0.5}
    (run_dir / "eval-baseline").mkdir(parents=True)
    (run_dir / "ppo-baseline").mkdir()
    (run_dir / "eval-baseline" / "eval.json").write_text(json.dumps(
        {"seed": 0, "reference": "sft", "models": {"sft": {"gold_score": 0.6}, "ppo": ppo}}))
    OmegaConf.save({"run_name": "tiny", "variant": "baseline", "paths": {"ppo": str(run_dir / "ppo-baseline")}},
                   run_dir / "eval-baseline" / "config.resolved.yaml")
    metrics = "".join(json.dumps({"step": n, **UPDATE}) + "\n" for n in (1, 2))
    (run_dir / "ppo-baseline" / "metrics.jsonl").write_text(metrics)
    return run_dir


def error_line(capsys, *args) -> str:
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_the_fixture_run_makes_a_report(run, capsys):
    assert main([str(run)]) == 0
    assert (run / "report" / "report.md").is_file()


@pytest.mark.parametrize("text", ["", '{"seed": 0, "refer'])
def test_an_empty_or_cut_short_eval_json_is_an_error_naming_it(run, capsys, text):
    (run / "eval-baseline" / "eval.json").write_text(text)
    err = error_line(capsys, run)
    assert f"{run / 'eval-baseline' / 'eval.json'} is empty or cut short" in err and "pipeline.force=eval" in err


def test_an_evaluation_without_its_config_is_an_error_naming_it(run, capsys):
    (run / "eval-baseline" / "config.resolved.yaml").unlink()
    err = error_line(capsys, run)
    assert f"{run / 'eval-baseline'} has eval.json but no config.resolved.yaml" in err and "pipeline.force=eval" in err


def test_a_metrics_line_cut_short_at_the_end_is_left_out_with_a_warning(run, capsys):
    metrics = run / "ppo-baseline" / "metrics.jsonl"
    with open(metrics, "a") as f:
        f.write('{"step": 3, "episo')
    assert main([str(run)]) == 0
    assert f"warning: left out line 3 of {metrics}, the last" in capsys.readouterr().err
    assert [row["step"] for row in read_jsonl(metrics)] == [1, 2]


def test_a_damaged_metrics_line_before_the_last_is_an_error_naming_file_and_line(run, capsys):
    metrics = run / "ppo-baseline" / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join([lines[0], '{"step": 2, "episo', lines[1]]) + "\n")
    err = error_line(capsys, run)
    assert f"line 2 of {metrics} is not JSON" in err


def test_out_naming_a_file_is_an_error(run, capsys, tmp_path):
    (tmp_path / "taken").write_text("not a directory")
    err = error_line(capsys, run, "--out", tmp_path / "taken")
    assert f"cannot write the report into {tmp_path / 'taken'}: it is a file" in err
    err = error_line(capsys, run, "--out", tmp_path / "taken" / "report")
    assert "a path above it is a file" in err
