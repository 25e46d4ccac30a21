"""SIGUSR1 (Slurm's warning before pre-emption) mid-stage: a complete checkpoint, exit status 75, and a resume
that says where it starts and finishes the run."""

from __future__ import annotations

import json
import os
import signal

import pytest
from helpers import run_module, start_module, wait_for

from align.runtime.checkpoints import MARKER, numbered
from align.runtime.preemption import PREEMPTED, SIGNALS, StopRequest


@pytest.mark.parametrize("signum", SIGNALS)
def test_a_signal_is_recorded_not_acted_on(signum):
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    try:
        stop = StopRequest()
        assert not stop.requested()
        os.kill(os.getpid(), signum)  # with the default handler, SIGTERM would end this process here
        assert stop.requested() and stop.describe() == signal.Signals(signum).name
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@pytest.mark.parametrize("preemptible", [True, False])
def test_ctrl_c_ends_a_stage_with_one_line_and_the_shells_status(preemptible, capsys):
    from align.core.config import compose
    from align.runtime.runs import run_stage

    def interrupted(config):
        raise KeyboardInterrupt

    previous = {s: signal.getsignal(s) for s in SIGNALS}
    try:
        with pytest.raises(SystemExit) as exit_:
            run_stage(interrupted, compose(["+experiment=tiny"], stage="sft"), preemptible=preemptible)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    assert exit_.value.code == 130
    message = capsys.readouterr().err
    assert message.startswith("interrupted") and message.count("\n") == 1
    assert ("re-run the same command to resume" in message) == preemptible  # a chat has nothing to resume


def logged_steps(run_dir, key: str) -> list[int]:
    path = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    return [row["step"] for row in rows if key in row]


def interrupt_then_resume(module: str, common: list[str], run_dir, key: str, tmp_path) -> tuple[int, str]:
    """SIGUSR1 once the stage has logged a training step; checks status 75 and the checkpoint; runs it again.
    Returns the step it stopped at and the resumed run's stdout."""
    process = start_module(module, *common, log=tmp_path / "interrupted.log")
    wait_for(lambda: logged_steps(run_dir, key), process)
    process.send_signal(signal.SIGUSR1)
    assert process.wait(timeout=300) == PREEMPTED, (tmp_path / "interrupted.log").read_text()[-3000:]
    output = (tmp_path / "interrupted.log").read_text()
    (checkpoint,) = numbered(run_dir)
    stopped_at = int(checkpoint.name.split("-")[1])
    assert "pre-empted: stopped on SIGUSR1" in output and f"wrote {checkpoint}" in output
    assert (checkpoint / MARKER).is_file() and not (run_dir / "final").exists()
    resumed = run_module(module, *common)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {checkpoint}" in resumed.stdout
    return stopped_at, resumed.stdout


@pytest.mark.slow
def test_sft_stops_on_sigusr1_and_resumes(tmp_path, tiny_data_root):
    common = ["+experiment=tiny", f"paths.root={tmp_path}", f"paths.data={tiny_data_root}", "sft.max_steps=60",
              "sft.save_steps=1000", "sft.eval_steps=1000", "sft.logging_steps=5", "eval.num_prompts=10"]
    run_dir = tmp_path / "tiny" / "sft"
    stopped_at, _ = interrupt_then_resume("align.sft", common, run_dir, "sft/loss", tmp_path)
    assert 5 <= stopped_at < 60
    assert logged_steps(run_dir, "sft/loss") == list(range(5, 61, 5))  # each step logged once
    assert json.loads((run_dir / "metrics.json").read_text())["global_step"] == 60


@pytest.mark.slow
def test_pretraining_stops_on_sigusr1_and_resumes(tmp_path, tiny_data_root):
    common = ["+experiment=tiny", f"paths.root={tmp_path}", f"paths.data={tiny_data_root}", "pretrain.max_steps=60",
              "pretrain.save_steps=1000", "pretrain.eval_steps=1000", "pretrain.logging_steps=5"]
    run_dir = tmp_path / "tiny" / "pretrain"
    stopped_at, _ = interrupt_then_resume("align.pretrain", common, run_dir, "pretrain/loss", tmp_path)
    assert 5 <= stopped_at < 60
    assert json.loads((run_dir / "metrics.json").read_text())["global_step"] == 60


@pytest.mark.slow
def test_sigterm_while_the_stage_starts_stops_it_after_its_first_step(tmp_path, tiny_data_root):
    common = ["+experiment=tiny", f"paths.root={tmp_path}", f"paths.data={tiny_data_root}", "sft.max_steps=20",
              "sft.save_steps=1000", "sft.eval_steps=1000", "eval.num_prompts=10"]
    run_dir = tmp_path / "tiny" / "sft"
    process = start_module("align.sft", *common, log=tmp_path / "interrupted.log")
    wait_for(lambda: (run_dir / "config.resolved.yaml").is_file(), process)  # the run started; no step yet
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=300) == PREEMPTED, (tmp_path / "interrupted.log").read_text()[-3000:]
    (checkpoint,) = numbered(run_dir)
    assert (checkpoint / MARKER).is_file() and "stopped on SIGTERM" in (tmp_path / "interrupted.log").read_text()
    assert run_module("align.sft", *common).returncode == 0


@pytest.mark.slow
def test_ppo_stops_on_sigusr1_and_resumes(tiny_rm_dir, tmp_path, tiny_data_root):
    root = tiny_rm_dir.parent.parent
    common = ["+experiment=tiny", f"paths.root={root}", f"paths.data={tiny_data_root}", "ppo.total_episodes=320",
              "ppo.save_every=0", "eval.num_prompts=10", "variant=preempted"]
    run_dir = root / "tiny" / "ppo-preempted"
    stopped_at, _ = interrupt_then_resume("align.ppo", common, run_dir, "objective/kl", tmp_path)
    assert 1 <= stopped_at < 10
    assert logged_steps(run_dir, "objective/kl") == list(range(1, 11))
    assert (run_dir / "final" / "model.safetensors").is_file()
