"""The config tree: every experiment composes and validates; mistakes fail at start-up, naming the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import CONF, compose_config, run_module, tiny_config, without_hydra
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf, open_dict

from align.core.config import compose, load
from align.core.errors import UserError

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
STAGES = ["sft", "rm", "ppo"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("stage", STAGES)
def test_every_experiment_composes_for_every_stage(experiment, stage):
    cfg = compose_config(f"+experiment={experiment}", "paths.root=/runs", stage=stage)
    # The run directory Hydra uses is the stage's fixed path, named after the experiment (and PPO's variant).
    assert cfg.hydra.run.dir == f"/runs/{experiment}/{stage}" + ("-baseline" if stage == "ppo" else "")
    config = load(without_hydra(cfg))
    assert config.run_name == experiment


def test_experiment_is_not_in_the_defaults_list():
    # A default for `experiment` would break the `+experiment=NAME` form users type.
    text = (CONF / "config.yaml").read_text()
    defaults = text.split("defaults:")[1].split("\n\n")[0]
    entries = [line for line in defaults.splitlines() if line.strip().startswith("- ")]
    assert entries and not any("experiment" in line or "ablation" in line for line in entries)


def test_typo_in_key_fails_naming_the_key():
    cfg = compose(["+experiment=tiny", "+sft.lrr=3"], stage="sft")
    with pytest.raises(UserError, match=r"sft\.lrr"):
        load(cfg)


def test_wrong_type_fails_naming_the_key():
    cfg = compose(["+experiment=tiny", "sft.max_steps=abc"], stage="sft")
    with pytest.raises(UserError, match=r"sft\.max_steps"):
        load(cfg)


def test_typo_through_the_real_entry_point_fails_before_any_work(tmp_path):
    result = run_module("align.sft", "+experiment=tiny", f"paths.root={tmp_path}", "+sft.lrr=3", timeout=120)
    assert result.returncode == 2, result.stderr
    assert "sft.lrr" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "tiny" / "sft" / "metrics.jsonl").exists()


@pytest.mark.parametrize("override", ["ppo.kl_coef=-1", "sft.lr=-1", "sft.batch_size=0", "sft.max_length=0",
                                      "ppo.response_tokens=0", "ppo.num_minibatches=0", "ppo.batch_size=0",
                                      "ppo.temperature=0", "ppo.gamma=1.5", "rm.epochs=0", "eval.batch_size=-4",
                                      "ppo.lr_schedule=cosine", "ppo.kl_estimator=k2", "data.on_bad_record=skip",
                                      "rm.audit_settings.lr=0",
                                      # each of these used to pass, then fail inside a library after the model loaded
                                      "sft.logging_steps=0", "rm.dataloader_workers=-1", "sft.lr_scheduler=bogus",
                                      "pretrain.adam_beta1=1.5", "sft.adam_eps=-1", "sft.attention_dropout=2.0",
                                      "seed=-1", "seed=99999999999", "ppo.lora.r=0", "sft.save_steps=-5",
                                      "distributed.mixed_precision=bogus", "rm.audit_settings.lr_scheduler=bogus"])
def test_a_number_out_of_its_range_fails_naming_the_key(override):
    key = override.split("=")[0]
    with pytest.raises(UserError, match=rf"at key '{re.escape(key)}'"):
        load(compose(["+experiment=tiny", override], stage="ppo"))


@pytest.mark.parametrize("overrides, key", [(["sft.epochs=nan", "sft.max_steps=0"], "sft.epochs"),
                                            (["ppo.algorithm=grpo", "ppo.num_generations=1"], "ppo.num_generations")])
def test_settings_that_fail_only_together_fail_naming_the_key(overrides, key):
    with pytest.raises(UserError, match=rf"at key '{re.escape(key)}'"):
        load(compose(["+experiment=tiny", *overrides], stage="ppo"))


def test_the_lr_schedulers_written_out_are_transformers_own():
    from transformers import SchedulerType

    from align.core.config import LR_SCHEDULERS

    assert set(LR_SCHEDULERS) == {s.value for s in SchedulerType}


def test_an_out_of_range_number_through_the_real_entry_point_fails_before_any_work(tmp_path):
    result = run_module("align.ppo", "+experiment=tiny", f"paths.root={tmp_path}", "ppo.kl_coef=-1", timeout=120)
    assert result.returncode == 2, result.stderr
    assert "ppo.kl_coef" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "tiny" / "ppo-baseline" / "metrics.jsonl").exists()


def test_stage_paths_are_fixed_and_readable():
    config = tiny_config("paths.root=/runs", "paths.data=/data")
    assert config.paths.sft == "/runs/tiny/sft"
    assert config.rm.init_from == config.paths.sft + "/final"  # the RM finds the SFT model by interpolation
    assert config.ppo.policy_init == config.paths.sft + "/final"
    assert config.ppo.value_init == config.ppo.reward_model == config.paths.rm + "/final"
    assert config.paths.ppo == "/runs/tiny/ppo-baseline"
    assert config.data.dir.startswith("/data/")
    assert Path(config.data.sft_train).parent.parent == Path(config.data.dir)


def numeric_leaves(node, prefix: str = "") -> list[str]:
    """Dotted keys of the int, float and bool values of a config (as plain containers)."""
    if isinstance(node, dict):
        return [k for key, child in node.items() for k in numeric_leaves(child, f"{prefix}{key}.")]
    return [prefix[:-1]] if isinstance(node, (int, float, bool)) else []


TINY = compose(["+experiment=tiny", "paths.root=/runs"], stage="sft")
TINY_NUMERIC = numeric_leaves(OmegaConf.to_container(TINY, resolve=False))
JUNK = st.text(alphabet="qxz", min_size=1, max_size=6)  # never parses as a number or a boolean


@settings(max_examples=100, deadline=None)
@given(key=st.sampled_from(TINY_NUMERIC), junk=JUNK)
def test_property_a_wrongly_typed_value_is_reported_with_its_key(key, junk):
    cfg = TINY.copy()
    OmegaConf.update(cfg, key, junk)
    with pytest.raises(UserError, match=re.escape(f"'{key}'")):
        load(cfg)


@settings(max_examples=50, deadline=None)
@given(section=st.sampled_from(["sft", "rm", "ppo", "eval", "data", "model", "paths"]), name=JUNK)
def test_property_an_unknown_key_is_reported_with_its_name(section, name):
    cfg = TINY.copy()
    with open_dict(cfg):
        OmegaConf.update(cfg, f"{section}.{name}", 1, force_add=True)
    with pytest.raises(UserError, match=re.escape(f"{section}.{name}")):
        load(cfg)
