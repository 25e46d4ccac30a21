"""Several processes: what `accelerate launch` set up, and the few things the stages must do about it.

`accelerate launch --config_file conf/accelerate/<ddp|zero2|zero3|zero3_offload>.yaml -m align.<stage> ...` starts
the processes and hands each the layout in its environment (WORLD_SIZE, ACCELERATE_DEEPSPEED_ZERO_STAGE,
ACCELERATE_MIXED_PRECISION, ...); conf/distributed/launcher.yaml reads it into the run's config, so
config.resolved.yaml records it.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager

from align.core.config import DistributedConfig
from align.core.console import is_main_process
from align.core.errors import UserError


def barrier() -> None:
    """Wait until every process reaches this point (nothing to wait for in a one-process run)."""
    import torch.distributed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def drop_launcher_arguments() -> None:
    """Remove `--local_rank=N` from the command line: DeepSpeed's multi-node launcher appends it, Hydra would reject
    it, and the same number is in the LOCAL_RANK environment variable."""
    sys.argv[1:] = [a for a in sys.argv[1:] if not a.startswith(("--local_rank", "--local-rank"))]


def join_processes(dist: DistributedConfig) -> None:
    """Join the process group before any Accelerator or Trainer is made, and leave Hydra's log file to the main process.

    Without GPUs, accelerate gives DeepSpeed's processes no backend and then counts one process (DeepSpeed's batch
    size check fails on every rank), and DDP needs to be told it runs on CPUs: naming gloo fixes both.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != dist.world_size:
        raise UserError(f"distributed.world_size={dist.world_size} but the launcher started {launched} processes")
    if launched == 1:
        return
    if not is_main_process():
        root = logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
            root.removeHandler(handler)
    import torch
    from accelerate import PartialState

    if torch.cuda.is_available():
        PartialState()
    else:
        PartialState(cpu=dist.deepspeed_zero_stage == 0, backend="gloo")


def main_process_first():
    """A context in which the main process goes first (builds the data) and the others follow (find it built)."""
    from accelerate import PartialState

    return PartialState().main_process_first()


@contextmanager
def gathered(params: list):
    """Under ZeRO-3, where every rank holds a shard of each weight: the full `params` inside the block, and what the
    main process writes into them is kept. Anywhere else, the params as they are."""
    if not any(hasattr(p, "ds_id") for p in params):  # DeepSpeed marks the parameters it partitions
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=0):
        yield


def deepspeed_settings(accelerator, micro_batch_size: int, max_grad_norm: float) -> None:
    """Fill what DeepSpeed would take from a DataLoader or a Trainer, for a loop that has neither (PPO); under DeepSpeed
    the engine clips gradients itself, inside accelerator.backward()."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None:
        plugin.deepspeed_config.update(train_micro_batch_size_per_gpu=micro_batch_size,
                                       gradient_clipping=max_grad_norm)


def prepare_frozen(model, accelerator):
    """A model that only runs forward (the reference, the reward model), on the accelerator's device and in the
    precision of the models it is compared with: a policy under bf16 autocast against an fp32 reference would start
    PPO at a KL of bf16 rounding noise, not 0. Under DeepSpeed it becomes an inference engine with the run's precision
    (TRL's), which under ZeRO-3 gathers each layer as it runs; otherwise accelerate applies the mixed-precision
    autocast to its forward, as it does to the policy's."""
    if accelerator.state.deepspeed_plugin is not None:
        from trl.models.utils import prepare_deepspeed

        return prepare_deepspeed(model, accelerator)
    return accelerator.prepare_model(model, evaluation_mode=True)


def forget_accelerator() -> None:
    """Let the next Trainer (or PPO) in this process start as the first one did: a second Accelerator with a DeepSpeed
    plugin is refused while the first one's state is kept, and while an earlier Trainer's DeepSpeed config is alive,
    transformers loads every model ZeRO-3-partitioned, so a new reward head would be drawn into an empty shard. A
    pipeline of stages and the RM's restarts both make several. The process group stays (accelerate's PartialState)."""
    from accelerate.state import AcceleratorState
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    AcceleratorState._reset_state()  # private, the one way accelerate offers; its own tests do the same
    unset_hf_deepspeed_config()


def leave_processes() -> None:
    """Leave the process group on every rank (a ZeRO-3 run can otherwise abort at interpreter exit)."""
    import torch.distributed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        barrier()
        torch.distributed.destroy_process_group()
