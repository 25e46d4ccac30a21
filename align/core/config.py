"""Typed definitions of the composed Hydra config.

YAML in `conf/` holds the values; these dataclasses hold the types and what each field means. `load` merges the
composed config into them, so a misspelt key or a wrong type fails at start-up, naming the key, before any work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from align.core.errors import UserError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"  # the repository's config tree (align is used from a checkout)


@dataclass
class ScratchArchitecture:
    """A GPT-2 built from a config with random weights (no download)."""

    n_layer: int
    n_embd: int
    n_head: int
    n_positions: int
    initializer_range: float  # 0.1, not GPT-2's 0.02: tiny models only learn to copy prompt words with it
    dropout: float  # residual, embedding and attention dropout


@dataclass
class ModelConfig:
    name: str  # short name used in logs and reports
    name_or_path: str | None  # hub name (gpt2, gpt2-medium, ...) or local directory; None: build from `scratch`
    tokenizer: str | None  # hub name or directory of the tokenizer; None: the same as name_or_path
    scratch: ScratchArchitecture | None  # architecture when name_or_path is None
    trust_remote_code: bool  # run code shipped with a hub model; off unless you trust its author


@dataclass
class WorldConfig:
    """Options of the tiny world generator (data_prep.tiny_world), for any of its tasks."""

    seed: int
    task: str  # words, digits or template (data_prep/tiny_world/__init__.py)
    kinds: list[str]  # the task's checks a prompt may ask for (words: words, start, end, mood)
    demonstrator_p: float  # probability that the demonstrator meets each check
    label_noise: float  # probability that a preference label is flipped
    degenerate_fraction: float  # share of preference pairs whose rejected side is empty or garbled
    n_sft: int
    n_pairs: int
    n_prompts: int
    n_eval_prompts: int
    n_ptx: int
    n_pretrain: int  # documents of plain text to pretrain a base model on (a twentieth as many more held out)
    pretrain_task_fraction: float  # share of those documents that are pages of solved prompts
    tokenizer_vocab_size: int
    two_turn_fraction: float = 0.0  # that many more demonstrations, pairs and training prompts again, with a second
    # turn that changes the request; when > 0, every evaluation prompt has a follow-up. A task with second turns only


@dataclass
class SourceConfig:
    """One dataset turned into contract files by a data_prep module, in its own directory data.dir/<name>."""

    prepare: str  # data_prep module that builds the files (tiny_world, alpaca, hh_rlhf, dolly, oasst1, ...)
    source: str | None  # hub dataset name or local file (JSON, JSONL, .gz, .txt) the module reads (None: generated)
    split: str  # split of a hub dataset to read (a local file is read whole)
    eval_size: int  # records of each kind held out for evaluation; -1: all (an evaluation set)
    decontaminate: list[str]  # sources whose evaluation prompts are removed from this source's output
    options: dict[str, Any] = field(default_factory=dict)  # the module's own (oasst1: languages), checked by it


@dataclass
class MixtureConfig:
    """One contract file a stage reads, mixed from the same file of several sources: data.dir/<name>/<file>."""

    file: str  # the file each part contributes, e.g. sft.train.jsonl
    parts: dict[str, float]  # source -> weight: how often its records are taken (1.5: all once and a seeded half)
    max_tokens: int | None  # records longer than this in data.tokenizer's tokens are dropped (and counted)
    tokenizer_vocab_size: int | None  # train a byte-level BPE on this mixture into <name>/tokenizer (scratch models)


@dataclass
class DataConfig:
    name: str
    dir: str  # prepared files live in dir/<source name>/
    sources: dict[str, SourceConfig]  # built on first use, in order
    mixtures: dict[str, MixtureConfig]  # files mixed from several sources, built on first use
    tokenizer: str | None  # the tokenizer max_tokens counts in (hub name or directory); model=tiny uses it too
    strict: bool  # data_prep stops at the first bad source record (file:line: field) instead of dropping it
    world: WorldConfig | None  # options of the tiny world generator; None for other data
    sft_train: str | None  # SFT demonstrations {"messages": [...]}
    sft_eval: str | None
    prefs_train: str | None  # preference pairs {"prompt", "chosen", "rejected"}
    prefs_eval: str | None
    prefs_audit: str | None  # pairs the training RM never sees, for an independent audit RM (align.rm rm.audit=true)
    prompts_train: str | None  # prompts {"prompt": [...]} that PPO samples responses to
    prompts_eval: str | None  # held-out prompts {"prompt": [...]} for judged evaluation
    ptx_train: str | None  # pretraining text {"text": ...} for PPO-ptx
    pretrain_train: str | None  # plain text {"text": ...} that align.pretrain trains a base model on
    pretrain_eval: str | None  # held-out plain text: the pretrained model's perplexity
    judge: str | None  # the task's gold judge: any importable package.module:function (prompt, response, ended) ->
    #   score, or a data_prep module's name (tiny_world.judge); None: no judge, gold scores left out (docs/own_task.md)
    on_bad_record: str  # "error": stop at the first malformed record; "drop": drop it and report the count


@dataclass
class TrainerSettings:
    """Optimisation, logging and checkpointing of a stage trained with a transformers Trainer (SFT, RM)."""

    init_from: str | None  # model to start from: hub name or directory; None builds model.scratch
    epochs: float
    max_steps: int  # > 0 overrides epochs
    lr: float
    lr_scheduler: str  # any transformers scheduler name: cosine, linear, constant_with_warmup, ...
    warmup_ratio: float
    weight_decay: float
    adam_beta1: float
    adam_beta2: float
    adam_eps: float
    max_grad_norm: float
    batch_size: int  # per device
    grad_accum: int
    eval_batch_size: int
    max_length: int  # tokens
    logging_steps: int
    eval_steps: int
    save_steps: int
    save_total_limit: int
    resume: bool  # continue from the last checkpoint in the run directory if there is one
    dataloader_workers: int
    gradient_checkpointing: bool  # recompute activations in backward: less memory, more time (docs/benchmarks.md)


@dataclass
class SFTSettings(TrainerSettings):
    attention_dropout: float | None  # dropout on GPT-2's attention weights while SFT trains; None: the model's own
    packing: bool  # pack conversations into rows of max_length tokens instead of padding each one
    packing_strategy: str  # "bfd": whole documents, which never attend to each other (align/trainers/packed_rows.py);
    #   "wrapped": rows cut across documents, which attend to each other
    trl_fused_lm_head: bool  # TRL's tiled LM head for the loss (less memory, slower on a CPU); false: align's own


@dataclass
class PretrainSettings(TrainerSettings):
    """Next-token training on plain text (the GPT-1/GPT-2 step): from scratch, or continued from a pretrained model."""

    packing: bool  # concatenate documents into full rows of max_length tokens, cut anywhere (GPT-2's pretraining)


@dataclass
class AuditRMSettings:
    """The audit RM's optimisation where it differs from the training RM's (null: the same). A classifier audit RM
    beside an implicit training RM needs a classifier's rate: DPO's leaves it blind to copy checks."""

    epochs: float | None  # as rm.epochs: rm.max_steps > 0 still stops the audit RM there
    lr: float | None
    lr_scheduler: str | None
    batch_size: int | None
    center_rewards_coefficient: float | None  # 0.0 turns centering off for the audit RM alone


@dataclass
class RMSettings(TrainerSettings):
    kind: str  # "classifier" (a scalar head read at the EOS, Bradley-Terry) or "implicit" (DPO's loss: beta x the
    # reply's log-ratio to the SFT model; align.modeling.implicit_reward)
    beta: float  # the implicit reward's beta; PPO against it needs ppo.kl_coef >= beta x ppo.temperature
    length_normalize: bool  # implicit: the log-ratio sum per reply token (+ 1), scaled to a typical training reply
    center_rewards_coefficient: float | None  # c * mean((r_chosen + r_rejected)^2) added to the loss; None: off
    normalize_on: str  # SFT demonstrations whose mean score the saved RM shifts to 0 (InstructGPT section 3.5)
    normalize_samples: int  # how many of them (the first N); -1: all
    audit: bool  # train the audit RM instead: on data.prefs_audit, with seed + 1, into paths.rm_audit
    audit_kind: str  # the audit RM's kind: classifier | implicit (an implicit one shares the training one's reference)
    audit_settings: AuditRMSettings  # the audit RM's own epochs, rate, schedule, batch and centering
    restarts: int  # train this many RMs (seeds seed, seed + 1, ...) and keep the most accurate on the held-out pairs
    empty_rejected: float  # this share of the training pairs is also trained with an empty reply as the rejected side
    policy_check_samples: int  # with a judge: answers of ppo.policy_init per held-out prompt (2 or more); 0: off
    policy_check_prompts: int  # how many of data.prompts_eval (the first N) the policy check samples


@dataclass
class LoraSettings:
    """Low-rank adapters (peft) on the policy and the value model instead of full fine-tuning."""

    enabled: bool  # with LoRA the reference is the policy with its adapter disabled: no second copy in memory
    r: int
    alpha: float
    target_modules: list[str]  # GPT-2's Conv1D layers: c_attn, c_proj, c_fc


@dataclass
class PPOSettings:
    """PPO against the reward model (InstructGPT step 3); names follow the papers' symbols."""

    algorithm: str  # "ppo" (align.ppo), or TRL's "rloo", "grpo" or "dpo" in PPO's place (align.trainers.alternatives)
    policy_init: str  # the SFT model: initial policy and frozen reference
    value_init: str  # the value model starts as the reward model (InstructGPT, Stiennon et al.)
    reward_model: str  # frozen, normalised reward model
    reward: str  # what PPO maximises: "rm" (the reward model) or "judge" (the task's gold judge: the oracle row)
    total_episodes: int  # prompts sampled over the whole run
    batch_size: int  # episodes per update, per process
    num_minibatches: int  # optimizer steps per PPO epoch
    ppo_epochs: int  # passes over each batch
    lr: float
    lr_schedule: str  # "linear" (to 0 over the run) or "constant"
    adam_eps: float  # 1e-5, not PyTorch's 1e-8: PyTorch's eps makes early Adam updates too aggressive
    max_grad_norm: float
    max_prompt_tokens: int  # longer prompts are dropped (and counted)
    response_tokens: int  # sampling budget; responses stop at EOS or here
    temperature: float  # sampling temperature, and the divisor of logits in every logprob
    kl_coef: float  # beta: weight of the per-token KL penalty to the reference
    kl_estimator: str  # "k1" (-log r) or "k3" ((r - 1) - log r)
    adaptive_kl: bool  # Ziegler et al.'s controller towards kl_target over kl_horizon episodes
    kl_target: float
    kl_horizon: int
    gamma: float
    lam: float
    cliprange: float
    cliprange_value: float
    vf_coef: float
    whiten_rewards: bool
    whiten_advantages: bool  # normalise GAE advantages over the batch (masked mean 0, variance 1)
    missing_eos_mode: str  # "replace" the score of a response without EOS by missing_eos_penalty, "subtract" it, "none"
    missing_eos_penalty: float
    ptx_coef: float  # gamma of InstructGPT eq. 2: weight of the LM loss on pretraining text; 0 is plain PPO
    ptx_batch_size: int  # pretraining texts per minibatch
    num_generations: int  # rloo, grpo: completions sampled per prompt (batch_size and total_episodes count completions)
    dpo_beta: float  # dpo: beta of the DPO loss (the implicit KL coefficient)
    lora: LoraSettings
    log_every: int  # updates
    gold_eval_every: int  # updates between gold-judge scores of the policy on held-out prompts; 0: off (needs a judge)
    gold_eval_prompts: int  # how many held-out prompts (the first N) those scores use
    save_every: int  # updates between checkpoints; 0: none
    save_total_limit: int  # checkpoints kept
    resume: bool  # continue from the last checkpoint in the run directory if there is one


@dataclass
class EvalConfig:
    """How responses are sampled whenever a model is judged, and what `align.eval` compares."""

    max_new_tokens: int
    temperature: float  # 0: greedy
    batch_size: int
    num_prompts: int  # held-out prompts used (the first N); -1: all
    max_prompt_tokens: int  # `align.eval` leaves out (and counts) longer prompts, which the model could not answer
    models: dict[str, str | None]  # label -> model directory, hub name, or "base"; a null entry is left out
    reference: str  # the label KL and win rates are measured against
    reward_model: str | None  # scores every response; null: no RM columns
    audit_reward_model: str | None  # an RM trained on other pairs: does it confirm the training RM's gains? null: off
    greedy_gold: bool  # with a judge and temperature > 0: also judge each model's greedy answers, and warn on a loss
    report_samples: int  # prompts shown with every model's response side by side in report.md
    shots: dict[str, list[int]]  # label -> numbers of solved examples shown before each prompt (a row each); else 0
    shot_examples: str | None  # SFT records the examples come from (never an evaluation prompt)
    plain_text: list[str]  # labels prompted as plain text (a base model): examples and question as pretraining pages


@dataclass
class PipelineConfig:
    stages: list[str]  # run in this order, each reading the one before through paths
    force: str | None  # run this stage and every later one again even if finished (the old output is moved aside)


@dataclass
class ChatConfig:
    model: str  # a stage's final/ directory (or any chat model with this project's template)
    prompt: str | None  # one-shot mode: answer this prompt and exit
    system: str | None  # optional system message
    max_new_tokens: int
    temperature: float  # 0: greedy


@dataclass
class DistributedConfig:
    """The process layout, as `accelerate launch` set it up (conf/accelerate/), recorded with the run."""

    name: str
    mixed_precision: str  # "no" (fp32), "bf16" or "fp16"
    world_size: int  # processes in the run
    deepspeed_zero_stage: int  # 0: no DeepSpeed (one process or DDP); 2 or 3: ZeRO stage
    deepspeed_offload: str  # where DeepSpeed keeps optimizer states between steps: "none" or "cpu"


@dataclass
class LoggerConfig:
    tensorboard: bool  # metrics also go to TensorBoard (they always go to metrics.jsonl)


@dataclass
class PathsConfig:
    root: str  # every run lives under root/run_name
    data: str  # prepared datasets
    pretrain: str  # the pretraining run directory: final/ is a plain causal LM that SFT can start from
    sft: str  # the SFT run directory; later stages find its final model here
    rm: str  # the reward-model run directory
    rm_audit: str  # the audit reward model's run directory (trained on data.prefs_audit)
    ppo: str  # the PPO run directory (named after the variant, so ablations do not overwrite each other)
    chat: str  # where `align.chat` keeps Hydra's record of a session
    eval: str  # `align.eval` writes eval.json, report.md and eval.png here
    pipeline: str  # `align.pipeline` keeps Hydra's record of its runs here


@dataclass
class Config:
    run_name: str  # names the run directory: experiment files set it to their own name
    variant: str  # ablation files set it; it names the directories of the stages they fork
    seed: int
    model: ModelConfig
    data: DataConfig
    pretrain: PretrainSettings
    sft: SFTSettings
    rm: RMSettings
    ppo: PPOSettings
    eval: EvalConfig
    pipeline: PipelineConfig
    chat: ChatConfig
    distributed: DistributedConfig
    logger: LoggerConfig
    paths: PathsConfig


def compose(overrides: list[str], stage: str) -> DictConfig:
    """The config `python -m align.<stage> <overrides>` hands to its train function, composed without running the stage
    (Hydra's compose API, for tests, benchmarks and `python -m data_prep --recipe`): Hydra's own `hydra` node is left
    out, as @hydra.main leaves it out; `load` then validates it."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name=stage):
        return hydra_compose(config_name="config", overrides=list(overrides))


def load(cfg: DictConfig) -> Config:
    """Validate the composed config against the dataclasses and resolve every interpolation."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), cfg)
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None)
        reason = str(error).splitlines()[0]
        raise UserError(f"invalid config{f' at key {key!r}' if key else ''}: {reason}") from None
    # These become directory names under paths.root and data.dir: one path component, so writes stay inside them.
    for key, name in (("run_name", config.run_name), ("variant", config.variant),
                      *((f"data.sources.{name}", name) for name in config.data.sources)):
        if name in ("", ".", "..") or "/" in name or "\\" in name:
            raise UserError(f"invalid config at key {key!r}: {name!r} names a directory, so it must be a plain name "
                            f"(no '/', not '.' or '..')")
    check_ranges(config)
    return config


POSITIVE = ("pretrain.lr", "pretrain.batch_size", "pretrain.grad_accum", "pretrain.eval_batch_size",
            "pretrain.max_length",
            "sft.lr", "sft.batch_size", "sft.grad_accum", "sft.eval_batch_size", "sft.max_length",
            "rm.lr", "rm.beta", "rm.batch_size", "rm.grad_accum", "rm.eval_batch_size", "rm.max_length", "rm.restarts",
            "rm.audit_settings.epochs", "rm.audit_settings.lr", "rm.audit_settings.batch_size",
            "ppo.total_episodes", "ppo.batch_size", "ppo.num_minibatches", "ppo.ppo_epochs", "ppo.lr", "ppo.adam_eps",
            "ppo.max_grad_norm", "ppo.max_prompt_tokens", "ppo.response_tokens", "ppo.temperature", "ppo.cliprange",
            "ppo.cliprange_value", "ppo.kl_target", "ppo.kl_horizon", "ppo.ptx_batch_size", "ppo.num_generations",
            "ppo.dpo_beta", "ppo.log_every", "eval.max_new_tokens", "eval.batch_size", "eval.max_prompt_tokens",
            "chat.max_new_tokens", "ppo.lora.r", "ppo.lora.alpha", "rm.policy_check_prompts",
            *(f"{stage}.{key}" for stage in ("pretrain", "sft", "rm") for key in
              ("adam_eps", "logging_steps", "eval_steps", "save_steps")))
NON_NEGATIVE = ("seed",  # save_total_limit 0: keep every checkpoint; max_grad_norm 0: no clipping
                *(f"{stage}.{key}" for stage in ("pretrain", "sft", "rm")
                  for key in ("dataloader_workers", "save_total_limit", "max_grad_norm")),
                "pretrain.weight_decay", "sft.weight_decay", "rm.weight_decay", "ppo.kl_coef", "ppo.vf_coef",
                "ppo.ptx_coef", "ppo.gold_eval_every", "ppo.save_every", "eval.temperature",
                "rm.audit_settings.center_rewards_coefficient", "rm.policy_check_samples",
                "chat.temperature")
FRACTIONS = ("pretrain.warmup_ratio", "sft.warmup_ratio", "rm.warmup_ratio", "ppo.gamma", "ppo.lam",
             "data.world.demonstrator_p", "data.world.label_noise", "data.world.degenerate_fraction",
             "data.world.pretrain_task_fraction", "data.world.two_turn_fraction", "rm.empty_rejected",
             "sft.attention_dropout",
             *(f"{stage}.{key}" for stage in ("pretrain", "sft", "rm") for key in ("adam_beta1", "adam_beta2")))
# transformers' SchedulerType, written out: composing a config does not import transformers (tests keep it in step)
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
                 "warmup_stable_decay", "greedy")


CHOICES = {"data.on_bad_record": ("error", "drop"), "ppo.algorithm": ("ppo", "rloo", "grpo", "dpo"),
           "ppo.reward": ("rm", "judge"), "ppo.lr_schedule": ("linear", "constant"), "ppo.kl_estimator": ("k1", "k3"),
           "rm.kind": ("classifier", "implicit"), "rm.audit_kind": ("classifier", "implicit"),
           "ppo.missing_eos_mode": ("replace", "subtract", "none"),
           "sft.packing_strategy": ("bfd", "bfd_split", "wrapped"),
           "distributed.mixed_precision": ("no", "bf16", "fp16"),
           "pretrain.lr_scheduler": LR_SCHEDULERS, "sft.lr_scheduler": LR_SCHEDULERS, "rm.lr_scheduler": LR_SCHEDULERS,
           "rm.audit_settings.lr_scheduler": (None, *LR_SCHEDULERS)}


def check_ranges(config: Config) -> None:
    """Numbers outside their meaningful range, and names outside their choices, stop the run before any work, naming
    the key: a negative KL coefficient would reward divergence, a zero batch size fails deep inside a library after
    the model has loaded, and a misspelt schedule would quietly be another one."""

    def value(key: str):
        node = config
        for part in key.split("."):
            node = getattr(node, part) if node is not None else None
        return node

    for keys, ok, expected in ((POSITIVE, lambda v: v > 0, "> 0"), (NON_NEGATIVE, lambda v: v >= 0, ">= 0"),
                               (FRACTIONS, lambda v: 0 <= v <= 1, "between 0 and 1")):
        for key in keys:
            v = value(key)
            if v is not None and not ok(v):  # None: a section this config does not have (data.world)
                raise UserError(f"invalid config at key {key!r}: {v} must be {expected}")
    for key, allowed in CHOICES.items():
        if value(key) not in allowed:
            raise UserError(f"invalid config at key {key!r}: {value(key)!r} is not one of "
                            f"{', '.join(map(str, allowed))}")
    if config.seed >= 2**32:
        raise UserError(f"invalid config at key 'seed': {config.seed} must be below 2**32 (numpy's seeds)")
    if config.ppo.algorithm in ("rloo", "grpo") and config.ppo.num_generations < 2:
        raise UserError(f"invalid config at key 'ppo.num_generations': {config.ppo.algorithm} compares each completion "
                        f"with the others of its prompt, so it needs at least 2, not {config.ppo.num_generations}")
    for stage in ("pretrain", "sft", "rm"):
        settings = value(stage)
        if not settings.epochs > 0 and settings.max_steps <= 0:  # not >: NaN too
            raise UserError(f"invalid config at key '{stage}.epochs': {settings.epochs} must be > 0 "
                            f"(or set {stage}.max_steps > 0)")


def to_yaml(config: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))
