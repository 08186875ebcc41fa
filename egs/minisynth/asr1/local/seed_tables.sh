#!/usr/bin/env bash
# HKD Table 1 (--hkd true) and DR-KD Table 3 (--ilm true) over model-training seeds: ./run.sh once
# per seed N into <expdir>/seed<N> with --seed N for every ASR, LM and stage-12 training (the corpus
# seed stays fixed; data/, dump/ and the token lists are shared, so features are made once), then
# the mean ± std section <expdir>/seed_tables.md (espnet_ext.recipe.bin.seed_tables) and RESULTS.md.
# Resumable: asr.sh skips finished stages, so a rerun continues where it stopped. Progress:
# <expdir>/seed_tables.log; each seed's log: <expdir>/seed<N>/run.log.
#
#   mkdir -p exp && nohup nice -n 19 local/seed_tables.sh > exp/seed_tables.out 2>&1 &   # CPU (hours)
#   local/seed_tables.sh --gpu true                 # one GPU: seeds in parallel, GPU decoding
#   local/seed_tables.sh --fast true --seeds "1 2"  # CI preset (checks the plumbing)
#   local/seed_tables.sh --stage 16                 # rewrite the tables from finished runs
set -euo pipefail

seeds="1 2 3"           # model-training seeds (ESPnet --seed of every ASR, LM and stage-12 training)
gpu=false               # true: one GPU: --ngpu 1, GPU decoding and teacher features, seeds in parallel
seed_jobs=              # seeds run at once (default: 1; with --gpu true every seed)
expdir=exp              # seed N goes to <expdir>/seed<N>; the section to <expdir>/seed_tables.md
stage=1                 # asr.sh --stage of every seed
stop_stage=16           # asr.sh --stop_stage of every seed
asr_args=               # extra ASR training options (--seed N is appended)
lm_args=                # extra LM training options (--seed N is appended)
ilm_train_args=         # extra stage-12 training options (--seed N is appended)
results_md=RESULTS.md   # written at the end from every experiment under <expdir>
forward_opts=()
help_message="Usage: local/seed_tables.sh [options]; every other option goes to ./run.sh (./run.sh --help)"
. utils/parse_options.sh

read -r -a seed_list <<< "${seeds}"
[ ${#seed_list[@]} -gt 0 ] || { echo "$0: --seeds is empty" >&2; exit 2; }
for n in "${seed_list[@]}"; do
    [[ "${n}" =~ ^[0-9]+$ ]] || { echo "$0: --seeds '${seeds}': '${n}' is not a seed number" >&2; exit 2; }
    [ "$(printf '%s\n' "${seed_list[@]}" | grep -cx "${n}")" -eq 1 ] || { echo "$0: --seeds '${seeds}' names seed ${n} twice" >&2; exit 2; }
done
if [ -z "${seed_jobs}" ]; then
    if "${gpu}"; then seed_jobs=${#seed_list[@]}; else seed_jobs=1; fi
fi
[[ "${seed_jobs}" =~ ^[1-9][0-9]*$ ]] || { echo "$0: --seed_jobs '${seed_jobs}' is not a number of seeds (1, 2, ...)" >&2; exit 2; }
mkdir -p "${expdir}"
progress_log=${expdir}/seed_tables.log
progress() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (seed_tables.sh) $*" | tee -a "${progress_log}" >&2; }

# One GPU: training and decoding on it, larger decoding batches and more jobs (the options given
# on the command line come later and win).
common=(--hkd true --ilm true)
"${gpu}" && common+=(--ngpu 1 --gpu_inference true --plm_gpu true --inference_batch_size 64 --nj 4)
common+=("${forward_opts[@]}")
run_seed() {  # run_seed N [asr.sh options]: ./run.sh for seed N, logged to <expdir>/seed<N>/run.log
    local n=$1 d=${expdir}/seed$1 t0=${SECONDS} rc=0
    shift
    mkdir -p "${d}"
    progress "seed ${n}: ./run.sh $* (log ${d}/run.log)"
    ./run.sh "${common[@]}" --expdir "${d}" --results_md "${d}/RESULTS.md" \
        --asr_args "${asr_args} --seed ${n}" --lm_args "${lm_args} --seed ${n}" \
        --ilm_train_args "${ilm_train_args} --seed ${n}" "$@" >> "${d}/run.log" 2>&1 || rc=$?
    progress "seed ${n}: $([ "${rc}" -eq 0 ] && echo finished || echo "failed (status ${rc}, see ${d}/run.log)")" \
        "after $(( SECONDS - t0 )) s"
    return "${rc}"
}
aggregate() {  # the section over every seed so far, and RESULTS.md (a failure here stops no seed)
    if python3 -m espnet_ext.recipe.bin.seed_tables --expdir "${expdir}" --seeds "${seed_list[*]}" \
            --output "${expdir}/seed_tables.md" >&2 \
        && python3 -m espnet_ext.recipe.bin.collect_results --output "${results_md}" "${expdir}"; then
        progress "tables over seeds ${seed_list[*]}: ${expdir}/seed_tables.md, included in ${results_md}"
    else
        progress "writing ${expdir}/seed_tables.md or ${results_md} failed"
    fi
}
declare -A pid_seed=()  # seed runs in the background: pid -> seed
start_seed() {  # start_seed N [asr.sh options]: run_seed in the background (a process group of its own)
    run_seed "$@" &
    pid_seed[$!]=$1
}
reap() {  # wait for one seed run, then update the tables
    local done_pid='' rc=0
    wait -n -p done_pid "${!pid_seed[@]}" || rc=$?
    [ "${rc}" -eq 0 ] || failed+=("${pid_seed[${done_pid}]}")
    unset "pid_seed[${done_pid}]"
    aggregate
}
stop_seeds() {  # Ctrl-C or kill: end every seed run (with its asr.sh and trainings)
    local p
    for p in "${!pid_seed[@]}"; do kill -TERM -- "-${p}" 2> /dev/null || true; done
    progress "interrupted: seeds stopped (rerun to continue where they stopped)"
    exit 130
}

# shellcheck disable=SC1091
. ./path.sh
t_start=${SECONDS}
progress "seeds ${seed_list[*]}, ${seed_jobs} at a time$("${gpu}" && echo ", one GPU"); stages ${stage}-${stop_stage}"
failed=()
set -m  # job control: every seed run in a process group of its own, which stop_seeds ends
trap stop_seeds INT TERM
# Seeds in parallel share data/ and dump/: the first seed makes them (stages up to 9) first.
if [ "${seed_jobs}" -gt 1 ] && [ "${stage}" -le 9 ]; then
    start_seed "${seed_list[0]}" --stage "${stage}" --stop_stage "$(( stop_stage < 9 ? stop_stage : 9 ))"
    reap
    [ ${#failed[@]} -eq 0 ] || { progress "the shared stages failed: stopping"; exit 1; }
fi
for n in "${seed_list[@]}"; do
    while [ "${#pid_seed[@]}" -ge "${seed_jobs}" ]; do reap; done
    start_seed "${n}" --stage "${stage}" --stop_stage "${stop_stage}"
done
while [ "${#pid_seed[@]}" -gt 0 ]; do reap; done
progress "all seeds: $(( SECONDS - t_start )) s wall; results: ${results_md} (section ${expdir}/seed_tables.md)"
if [ "${#failed[@]}" -gt 0 ]; then
    progress "failed seeds: ${failed[*]} (rerun to continue where they stopped)"
    exit 1
fi
