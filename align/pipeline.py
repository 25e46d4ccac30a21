"""The whole InstructGPT path in one command: SFT, reward model, PPO, then the judged evaluation (pretraining first
where pipeline.stages starts with pretrain).

    python -m align.pipeline +experiment=tiny                     # offline, CPU, a few minutes
    python -m align.pipeline +experiment=small seed=1             # the same overrides reach every stage
    python -m align.pipeline +experiment=tiny pipeline.force=rm   # run rm and every stage after it again

Each stage reads the one before through the config's paths, exactly as when the stages are run one by one. A stage
whose output is finished (the metrics.json or eval.json it writes last) is skipped, so a pipeline run again after an
interruption continues where it stopped, the interrupted stage resuming from its last checkpoint. A finished stage
made with other settings is never reused silently: the pipeline stops and names the first setting that differs.

Writes  what each stage writes; paths.pipeline/ holds Hydra's record of the pipeline run
"""

from __future__ import annotations

import gc
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from align.core.config import Config
from align.core.console import is_main_process, print0
from align.core.errors import UserError
from align.rm import audit_config
from align.runtime.distributed import barrier, drop_launcher_arguments, forget_accelerator
from align.runtime.preemption import Preempted, stop_request
from align.runtime.runs import STAGE_SECTIONS, first_difference, run_stage, settings

# The file each stage writes last: its output is finished once that file exists.
FINISHED_MARKER = {stage: "eval.json" if stage == "eval" else "metrics.json" for stage in STAGE_SECTIONS}


def stage_entry(stage: str, algorithm: str) -> Callable[[Config], dict]:
    """The function `python -m align.<stage>` runs (imported late: each stage imports its own heavy libraries)."""
    if stage == "pretrain":
        from align.pretrain import train
    elif stage == "sft":
        from align.sft import train
    elif stage in ("rm", "rm_audit"):  # the audit RM: the RM stage on the config audit_config gives it
        from align.rm import train
    elif stage == "ppo":
        from align.ppo import train_for

        return train_for(algorithm)
    else:
        from align.eval import evaluate as train
    return train


def fork_overrides(cfg: Config, stage: str) -> str:
    """The overrides that give `stage` and every later stage not yet named after the variant a run directory of a new
    variant's own (the ablations' fork), so that training them again leaves the finished outputs in place."""
    later = cfg.pipeline.stages[cfg.pipeline.stages.index(stage):]
    shared = [s for s in later if not Path(getattr(cfg.paths, s)).name.endswith(f"-{cfg.variant}")]
    return " ".join(["variant=NAME", *(f"'paths.{s}=${{paths.root}}/${{run_name}}/{s}-${{variant}}'" for s in shared)])


def saved_config(run_dir: Path, stage: str, finished_marker: str) -> dict:
    """The resolved config a finished stage saved when it started: what its output is checked against."""
    path = run_dir / "config.resolved.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir} is damaged: it has {finished_marker}, which marks {stage} finished, but not the "
                        f"config.resolved.yaml to check its settings against. To train {stage} and the stages after it "
                        f"again: pipeline.force={stage} (the damaged output is moved to {run_dir.name}.replaced)")
    return OmegaConf.to_container(OmegaConf.load(path))


def run_pipeline(cfg: Config) -> dict:
    unknown = [s for s in cfg.pipeline.stages if s not in STAGE_SECTIONS]
    if unknown or (cfg.pipeline.force is not None and cfg.pipeline.force not in cfg.pipeline.stages):
        raise UserError(f"pipeline stages are {', '.join(STAGE_SECTIONS)}; got stages={cfg.pipeline.stages}, "
                        f"force={cfg.pipeline.force}")
    if "rm_audit" in cfg.pipeline.stages and cfg.data.prefs_audit is None:  # before any stage runs, not after two
        raise UserError("pipeline stage rm_audit needs pairs of its own (data.prefs_audit is null): set it, or leave "
                        "the audit RM out with pipeline.stages=[sft,rm,ppo,eval] eval.audit_reward_model=null")
    forced = cfg.pipeline.stages[cfg.pipeline.stages.index(cfg.pipeline.force):] if cfg.pipeline.force else []
    timings = {}
    for stage in cfg.pipeline.stages:
        sections, finished_marker = STAGE_SECTIONS[stage], FINISHED_MARKER[stage]
        stage_cfg = audit_config(cfg) if stage == "rm_audit" else cfg
        current = OmegaConf.to_container(OmegaConf.structured(stage_cfg))
        run_dir = Path(getattr(cfg.paths, stage))
        if stage in forced and run_dir.exists() and is_main_process():
            aside = run_dir.with_name(run_dir.name + ".replaced")
            shutil.rmtree(aside, ignore_errors=True)
            run_dir.rename(aside)
            print(f"[pipeline] {stage}: forced; the previous output is now {aside}")
        if (run_dir / finished_marker).is_file():
            made_with = saved_config(run_dir, stage, finished_marker)
            difference = first_difference(settings(made_with, sections), settings(current, sections))
            if difference:
                raise UserError(f"{run_dir} was made with other settings ({difference}). To train {stage} and the "
                                f"stages after it again, keeping the earlier ones: pipeline.force={stage} (the old "
                                f"output is moved to {run_dir.name}.replaced). To keep the old output too, train into "
                                f"directories of a new variant (the ablations' fork, as in "
                                f"conf/ablation/rm_from_base.yaml): {fork_overrides(cfg, stage)}. Or another "
                                f"run_name, for a run of its own")
            print0(f"[pipeline] {stage}: finished output in {run_dir}, skipped")
            timings[stage] = "skipped"
            continue
        stop = stop_request()
        if stop.requested():  # a signal during a stage that finished anyway (eval): stop before the next one
            raise Preempted(f"stopped on {stop.describe()} before {stage}")
        print0(f"[pipeline] {stage}: running into {run_dir}", flush=True)
        start = time.perf_counter()
        forget_accelerator()  # each stage builds its own
        stage_entry(stage, cfg.ppo.algorithm)(stage_cfg)
        gc.collect()  # the stage's models are garbage now; free them before the next stage loads its own
        timings[stage] = f"{time.perf_counter() - start:.0f} s"

    print0("\n[pipeline] " + ", ".join(f"{stage} {took}" for stage, took in timings.items()))
    if "eval" not in cfg.pipeline.stages:
        return {"stages": timings}
    from align.evaluation.tables import print_table

    barrier()  # the main process writes eval.json; the others read it after
    results = json.loads((Path(cfg.paths.eval) / "eval.json").read_text())
    if is_main_process():
        report = Path(cfg.paths.eval) / "report.md"
        if timings["eval"] == "skipped":
            print(f"[pipeline] evaluation ({report}):\n")
            print_table(results)
        else:  # the stage that ran printed the table itself
            print(f"[pipeline] evaluation ({report}): its table is above")
    return {"stages": timings, "eval": results}


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    run_stage(run_pipeline, cfg)


if __name__ == "__main__":
    drop_launcher_arguments()
    main()
