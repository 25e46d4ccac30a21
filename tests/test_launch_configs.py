"""The launch configs in conf/accelerate/ and how a stage reads the layout the launcher hands it (no processes)."""

from __future__ import annotations

import sys

import pytest
from helpers import CONF, tiny_config

from align.core.errors import UserError
from align.runtime.distributed import drop_launcher_arguments, join_processes


@pytest.mark.parametrize(("name", "kind", "stage", "offload"), [
    ("ddp", "MULTI_GPU", None, None), ("zero2", "DEEPSPEED", 2, "none"), ("zero3", "DEEPSPEED", 3, "none"),
    ("zero3_offload", "DEEPSPEED", 3, "cpu"),
])
def test_launch_configs_load_in_accelerate(name, kind, stage, offload):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(CONF / "accelerate" / f"{name}.yaml"))
    assert config.distributed_type == kind and config.mixed_precision == "bf16" and config.num_processes == 8
    if stage is not None:
        assert config.deepspeed_config["zero_stage"] == stage
        assert config.deepspeed_config["offload_optimizer_device"] == offload
        # batch size, accumulation and clipping come from the stage's config, never from two places
        assert not {"gradient_accumulation_steps", "gradient_clipping"} & set(config.deepspeed_config)
    if stage == 3:
        assert config.deepspeed_config["zero3_save_16bit_model"]  # the final model is gathered when saved


def test_the_run_config_records_what_the_launcher_set_up(monkeypatch):
    assert tiny_config().distributed.world_size == 1  # plain `python -m`: one process, fp32
    for key, value in {"WORLD_SIZE": "8", "ACCELERATE_MIXED_PRECISION": "bf16", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3",
                       "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE": "cpu"}.items():
        monkeypatch.setenv(key, value)
    layout = tiny_config().distributed
    assert (layout.world_size, layout.mixed_precision, layout.deepspeed_zero_stage, layout.deepspeed_offload) == (
        8, "bf16", 3, "cpu")


def test_a_layout_that_contradicts_the_launcher_stops_the_stage(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="distributed.world_size=1 but the launcher started 2 processes"):
        join_processes(tiny_config("distributed=single").distributed)


def test_hydra_never_sees_the_launchers_local_rank(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["align.sft", "--local_rank=3", "+experiment=tiny", "--local-rank=3", "seed=1"])
    drop_launcher_arguments()
    assert sys.argv == ["align.sft", "+experiment=tiny", "seed=1"]
