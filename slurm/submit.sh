#!/usr/bin/env bash
# Submit the pipeline to Slurm as a chain of jobs, SFT -> RM -> PPO -> eval, each starting only after the previous
# one succeeded (a failed stage cancels the rest). Every stage gets the same sbatch options and Hydra overrides.
#
#   slurm/submit.sh [SBATCH_OPTIONS...] -- [HYDRA_OVERRIDES...]
#   slurm/submit.sh --partition=gpu --account=me --nodes=2 --gpus-per-node=8 --time=08:00:00 -- +experiment=small
#   ALIGN_STAGES="ppo eval" slurm/submit.sh -- +experiment=small ppo.kl_coef=0.1     # only part of the chain
#   ALIGN_STAGES="pretrain sft rm ppo eval" slurm/submit.sh -- +experiment=tiny +ablation=pretrained_base
#
# sbatch's environment variables work as well (SBATCH_PARTITION, SBATCH_ACCOUNT, SBATCH_TIMELIMIT, ...), and so do
# run_stage.sh's (ALIGN_ACCELERATE_CONFIG, ALIGN_PROCS_PER_NODE): the jobs inherit this environment.
# Logs: <paths.root>/<run_name>/slurm/align-<stage>-<job id>.out, e.g. outputs/small/slurm/align-ppo-1234.out.
# Prints the job ids, first stage first, one a line.
set -euo pipefail
cd "$(dirname "$0")/.."

sbatch_options=()
if [[ " $* " == *" -- "* ]]; then
    while [[ $1 != -- ]]; do sbatch_options+=("$1"); shift; done
    shift
fi
overrides=("$@")

# the run's own directory, as the stages resolve it (paths.root and run_name may come from overrides or environment)
setting() { python -m align.sft "${overrides[@]}" --cfg job --resolve --package "$1"; }
logs=$(setting paths.root)/$(setting run_name)/slurm
mkdir -p "$logs"

after=()
for stage in ${ALIGN_STAGES:-sft rm ppo eval}; do
    job=$(sbatch --parsable --chdir="$PWD" --output="$logs/%x-%j.out" "${after[@]}" "${sbatch_options[@]}" \
        "slurm/$stage.sbatch" "${overrides[@]}")
    job=${job%%;*}  # --parsable prints "id;cluster" on a federation
    echo "$job"
    after=(--dependency=afterok:"$job" --kill-on-invalid-dep=yes)
done
