"""Ablations: each composes with each experiment, names itself, changes what it says and forks the runs it changes."""

from __future__ import annotations

import pytest
from helpers import CONF, compose_config, without_hydra
from omegaconf import OmegaConf

from align.core.config import compose, load
from align.core.errors import UserError

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))

CLASSIFIER_RM = {"rm.kind": "classifier", "rm.epochs": 6, "rm.lr": 1.0e-3, "rm.lr_scheduler": "constant",
                 "rm.batch_size": 64, "rm.center_rewards_coefficient": 0.01, "ppo.kl_coef": 0.1}
# ablation -> (the settings it changes, the run directories besides ppo/eval/pipeline it forks)
ABLATIONS = {
    **{f"kl_{round(c * 100):03d}": ({"ppo.kl_coef": c}, set()) for c in (0.0, 0.01, 0.02, 0.05, 0.1)},
    "adaptive_kl": ({"ppo.adaptive_kl": True}, set()),
    "ptx": ({"ppo.ptx_coef": 1.0}, set()),
    "whiten_rewards": ({"ppo.whiten_rewards": True}, set()),
    "no_whiten_advantages": ({"ppo.whiten_advantages": False}, set()),
    "value_from_sft": ({"ppo.value_init": "${paths.sft}/final"}, set()),
    "k3": ({"ppo.kl_estimator": "k3"}, set()),
    "eos_replace": ({"ppo.missing_eos_mode": "replace", "ppo.missing_eos_penalty": -1.0}, set()),
    "eos_none": ({"ppo.missing_eos_mode": "none"}, set()),
    "temperature_10": ({"ppo.temperature": 1.0}, set()),
    "lora": ({"ppo.lora.enabled": True}, set()),
    "rm_from_base": ({**CLASSIFIER_RM, "rm.init_from": "${model.name_or_path}"}, {"rm", "rm_audit"}),
    "ppo_epochs_1": ({"ppo.ppo_epochs": 1}, set()),
    "ppo_minibatches_8": ({"ppo.num_minibatches": 8}, set()),
    "sft_packing": ({"sft.packing": True}, {"sft", "rm"}),
    "pretrained_base": ({"sft.init_from": "${paths.pretrain}/final", "sft.epochs": 10,
                         "eval.shots.base": [0, 1, 4], "eval.plain_text": ["base"],
                         "pipeline.stages": ["pretrain", "sft", "rm", "ppo", "eval"]}, {"sft", "rm"}),
    "two_turn": ({"data.dir": "${paths.data}/${data.name}_two_turn-seed${data.world.seed}",
                  "data.world.two_turn_fraction": 0.1}, {"sft", "rm"}),
    "rloo": ({"ppo.algorithm": "rloo"}, set()),
    "grpo": ({"ppo.algorithm": "grpo"}, set()),
    "dpo": ({"ppo.algorithm": "dpo", "ppo.dpo_beta": 0.3}, set()),
    "oracle": ({"ppo.reward": "judge"}, set()),
    "classifier_rm": (CLASSIFIER_RM, {"rm", "rm_audit"}),
}
ALWAYS_FORKED = {"ppo", "eval", "pipeline"}  # named after the variant
TINY_WORLD_ONLY = {"two_turn"}  # options of the tiny world's builder: refused where the data has no world
TINY_WORLDS = {"tiny", "digits", "template"}


def flat(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in flat(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def composed(experiment: str, *overrides: str):
    cfg = compose([f"+experiment={experiment}", "paths.root=/runs", *overrides], stage="sft")
    return cfg, load(cfg)


def test_the_list_above_is_every_file_in_conf_ablation():
    assert set(ABLATIONS) == {p.stem for p in (CONF / "ablation").glob("*.yaml")}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("ablation", sorted(ABLATIONS))
def test_ablation_changes_what_it_says_and_forks_what_it_changes(experiment, ablation):
    changes, forks = ABLATIONS[ablation]
    if ablation in TINY_WORLD_ONLY and experiment not in TINY_WORLDS:
        with pytest.raises(UserError, match="data.world"):
            composed(experiment, f"+ablation={ablation}")
        return
    base_cfg, base = composed(experiment)
    cfg, config = composed(experiment, f"+ablation={ablation}")  # validated by load()
    assert config.variant == ablation and config.run_name == experiment

    # The raw settings (interpolations unresolved): exactly the ones the ablation names differ, and only where the
    # experiment's own value is another one (small's RM is already a classifier).
    before, after = (flat(OmegaConf.to_container(c, resolve=False)) for c in (base_cfg, cfg))
    differ = {k for k in set(before) | set(after)
              if before.get(k) != after.get(k) and k != "variant" and not k.startswith("paths.")}
    assert differ == {k for k, v in changes.items() if before[k] != v}
    assert all(after[k] == v for k, v in changes.items())

    # The run directories: ppo/eval/pipeline follow the variant; SFT and RM are forked exactly when changed.
    paths_before, paths_after = vars(base.paths), vars(config.paths)
    forked = {k for k in paths_before if paths_before[k] != paths_after[k]}
    assert forked == ALWAYS_FORKED | forks
    for stage in ("sft", "rm"):  # a stage whose settings change must not share the baseline's directory
        if any(k.startswith(f"{stage}.") for k in differ):
            assert stage in forked
    if "sft" in forked:  # the RM trains from the SFT model: another SFT model, another RM
        assert "rm" in forked


def test_jobs_of_a_sweep_over_ablations_and_seeds_never_share_a_directory():
    """The README's seed sweep: `run_name=tiny-seed${seed}` gives each seed its own SFT and RM (which the seed
    decides), and each (ablation, seed) job its own PPO, evaluation and Hydra record."""
    seen = {}
    for ablation in ("kl_000", "kl_010", "rm_from_base"):
        for seed in (0, 1):
            cfg = compose_config("+experiment=tiny", f"+ablation={ablation}", f"seed={seed}",
                                 "run_name=tiny-seed${seed}", "paths.root=/runs", stage="pipeline")
            paths = vars(load(without_hydra(cfg)).paths)
            assert paths["sft"] == f"/runs/tiny-seed{seed}/sft"
            job = f"{cfg.hydra.sweep.dir}/{cfg.hydra.sweep.subdir}"
            assert job == f"/runs/tiny-seed{seed}/sweeps/pipeline/{ablation}-seed{seed}"
            for stage in ("ppo", "eval", "pipeline"):
                assert seen.setdefault(paths[stage], (ablation, seed)) == (ablation, seed)
            assert seen.setdefault(job, (ablation, seed)) == (ablation, seed)
