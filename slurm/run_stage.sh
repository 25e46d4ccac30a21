#!/usr/bin/env bash
# The body of every stage's sbatch script: run `python -m MODULE OVERRIDES...` on the job's nodes and requeue the job
# when it is pre-empted or about to time out.
#
#   slurm/run_stage.sh MODULE [HYDRA_OVERRIDES...]     (inside an allocation; the sbatch scripts call it)
#
# One launcher per node through srun. One process in all and no ALIGN_ACCELERATE_CONFIG: plain `python -m MODULE`.
# Otherwise `accelerate launch --config_file $ALIGN_ACCELERATE_CONFIG` (default conf/accelerate/ddp.yaml) with the
# machine count, process count, machine rank and main address taken from the allocation, and any further flags from
# $ALIGN_ACCELERATE_ARGS (e.g. "--mixed_precision no" on CPUs). Processes per node: $ALIGN_PROCS_PER_NODE, else the
# GPUs Slurm gave the node (--gpus-per-node), else 1.
#
# Requeue: Slurm sends USR1 to this script (--signal=B:USR1@SECONDS) before the time limit, and pre-emption sends
# TERM. Either is passed on as SIGTERM to every process of the stage (launchers and ranks); the stage saves a
# checkpoint and exits 75, and this script runs `scontrol requeue`. The requeued job runs the same command, and the
# stage resumes from its last checkpoint. A launcher reports a signalled rank's exit as its own failure, not as 75,
# so a signalled job whose stage did not finish is requeued too: checkpoints are atomic, resuming is always safe.
# A stage killed from outside (exit status above 128: a node that died, the kernel's OOM killer) with no signal sent
# here is requeued too, at most $ALIGN_MAX_REQUEUES times (default 3) over the job's life.
set -uo pipefail

module=${1:?usage: run_stage.sh MODULE [HYDRA_OVERRIDES...]}
shift
nodes=${SLURM_JOB_NUM_NODES:?run_stage.sh runs inside a Slurm job}
procs_per_node=${ALIGN_PROCS_PER_NODE:-${SLURM_GPUS_ON_NODE:-1}}
world=$((nodes * procs_per_node))
requeued=${SLURM_RESTART_COUNT:-0}
echo "$(date -u +%FT%TZ) job $SLURM_JOB_ID ($SLURM_JOB_NAME) on $SLURM_JOB_NODELIST: $module, $nodes node(s) x" \
    "$procs_per_node process(es), requeued $requeued time(s)"

if [[ -z ${ALIGN_ACCELERATE_CONFIG:-} && $world == 1 ]]; then
    stage=(python -m "$module" "$@")
else
    first_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
    # the address Slurm itself reaches that node at (its NodeAddr, which is the node name unless the cluster says
    # otherwise): node names need not resolve
    main_address=$(scontrol show node "$first_node" | grep -o 'NodeAddr=[^ ]*' | cut -d= -f2)
    main_address=${main_address:-$first_node}
    main_port=${ALIGN_MAIN_PORT:-$((20000 + SLURM_JOB_ID % 20000))}
    read -ra extra <<<"${ALIGN_ACCELERATE_ARGS:-}"
    # single quotes: SLURM_NODEID is each node's own, read by the bash that srun starts there
    stage=(bash -c 'exec accelerate launch --config_file "$1" --num_machines "$2" --num_processes "$3" \
        --machine_rank "$SLURM_NODEID" --main_process_ip "$4" --main_process_port "$5" \
        --deepspeed_multinode_launcher standard "${@:6}"' \
        launch "${ALIGN_ACCELERATE_CONFIG:-conf/accelerate/ddp.yaml}" "$nodes" "$world" "$main_address" "$main_port" \
        "${extra[@]}" -m "$module" "$@")
    # how long the launcher lets its ranks write their checkpoint after the signal before it kills them (default 30 s)
    export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-240}
fi

signals=0
forward() {  # $1: the signal this script got
    signals=$((signals + 1))
    echo "$(date -u +%FT%TZ) got SIG$1: asking the stage to checkpoint and stop"
    scancel --signal=TERM "$SLURM_JOB_ID"  # every process of the job's steps, not this script
}
trap 'forward USR1' USR1
trap 'forward TERM' TERM

srun --nodes="$nodes" --ntasks-per-node=1 --kill-on-bad-exit=1 "${stage[@]}" &
step=$!
waited=-1
while ((waited < signals)); do  # a trapped signal ends `wait` early: wait again, for the stage itself
    waited=$signals
    wait "$step"
    status=$?
done

max_requeues=${ALIGN_MAX_REQUEUES:-3}
if [[ $status == 75 || ($signals -gt 0 && $status != 0) ]]; then
    echo "$(date -u +%FT%TZ) stage stopped with status $status: requeueing job $SLURM_JOB_ID to resume"
    scontrol requeue "$SLURM_JOB_ID"
    exit 75
elif ((status > 128 && requeued < max_requeues)); then
    # A process killed from outside (signal status - 128, e.g. 9) with no signal sent to this script: what a node that
    # dies or a kernel that kills for memory looks like from here. Requeued a few times, not forever.
    echo "$(date -u +%FT%TZ) a process of the stage was killed (status $status), as when a node fails: requeueing" \
        "job $SLURM_JOB_ID to resume from its last complete checkpoint ($((requeued + 1)) of at most $max_requeues)"
    scontrol requeue "$SLURM_JOB_ID"
    exit 75
fi
echo "$(date -u +%FT%TZ) stage finished with status $status"
exit "$status"
