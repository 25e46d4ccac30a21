"""rm.restarts: several RMs trained with consecutive seeds, the most accurate on the held-out pairs' labels kept."""

from __future__ import annotations

import json

from helpers import rm_on_a_slice

from align import rm as rm_stage


def test_restarts_keep_the_most_accurate_and_resume_without_training_again(tiny_data_root, tmp_path):
    # a slice of the world's pairs: the restarts, not the data, are under test
    cfg = rm_on_a_slice(tiny_data_root, tmp_path, "rm.restarts=3", "rm.max_steps=3", "rm.batch_size=8", train=48)

    metrics = rm_stage.train(cfg)
    run_dir = tmp_path / "tiny" / "rm"
    restarts = json.loads((run_dir / "eval.json").read_text())["restarts"]
    assert restarts["seeds"] == [cfg.seed, cfg.seed + 1, cfg.seed + 2]
    accuracies = restarts["accuracy"]
    assert len(set(accuracies)) > 1, "three seeds gave the same RM: the seed does not reach the restarts"
    assert restarts["chosen"] == accuracies.index(max(accuracies))
    # the saved RM is the chosen one: normalisation shifts scores, never which response of a pair wins
    assert metrics["accuracy"] == accuracies[restarts["chosen"]]
    for k in range(3):
        assert (run_dir / f"restart-{k}" / "checkpoint-3").is_dir()
    # the saved RM is the chosen restart's last checkpoint, shifted by the normalisation (the layer norm's bias only)
    from safetensors.torch import load_file

    final = load_file(run_dir / "final" / "model.safetensors")
    chosen = load_file(run_dir / f"restart-{restarts['chosen']}" / "checkpoint-3" / "model.safetensors")
    assert all(final[name].equal(chosen[name]) for name in chosen if name != "transformer.ln_f.bias")

    # run again: every restart is finished, so each is loaded from its last checkpoint, and the choice is the same
    again = rm_stage.train(cfg)
    assert again["resumed_from"] == str(run_dir / f"restart-{restarts['chosen']}" / "checkpoint-3")
    assert json.loads((run_dir / "eval.json").read_text())["restarts"] == restarts
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1  # the final row, not one per run
