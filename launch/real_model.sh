#!/usr/bin/env bash
# The whole pipeline on a real model and GPUs, one `accelerate launch` per stage, DeepSpeed ZeRO-3,
# with a pause while people rank in the browser. Defaults: Qwen2.5-0.5B-Instruct on 8 GPUs.
#
#   GPUS=8 SFT_DATA=HuggingFaceH4/ultrachat_200k PROMPTS=my_prompts.jsonl bash launch/real_model.sh
#   FROM=reward bash launch/real_model.sh          # resume at a stage: sft sample rank export reward ppo
#   RANKINGS=2000 STORE=postgresql://user:pw@db:5432/rankings bash launch/real_model.sh
#
# Every training stage resumes from its own last checkpoint (checkpoint.resume=auto in the configs),
# so re-running the same command after a crash continues where it stopped. Estimated time and memory
# per stage are in docs/gpus.md ("The whole pipeline on GPUs").
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${MODEL:-Qwen/Qwen2.5-0.5B-Instruct}
GPUS=${GPUS:-8}
RUN=${RUN:-runs/qwen0.5b}
SFT_DATA=${SFT_DATA:-HuggingFaceH4/ultrachat_200k}  # prompt/completion or messages rows
PROMPTS=${PROMPTS:-HuggingFaceH4/ultrachat_200k}    # prompts to rank (prompt or messages rows; final answers dropped)
PROMPTS_SPLIT=${PROMPTS_SPLIT:-test_gen}              # split of a hub id or datasets folder
PROMPTS_LIMIT=${PROMPTS_LIMIT:-2000}                  # prompts sampled for ranking
STORE=${STORE:-$RUN/rankings.db}                     # SQLite file, or postgresql://... for a team
K=${K:-4}                                            # completions per prompt people rank
PER_TASK=${PER_TASK:-1}                              # distinct people per task
RANKINGS=${RANKINGS:-0}                              # continue after this many rankings (0: every task)
HOST=${HOST:-0.0.0.0}
PORT=${PORT:-8000}
FROM=${FROM:-sft}
LAUNCH=${LAUNCH:-launch/zero3.yaml}                  # launch/ddp_cpu.yaml runs it on CPUs (with the tiny configs)
SFT_CONFIG=${SFT_CONFIG:-configs/sft_qwen0.5b.yaml}
REWARD_CONFIG=${REWARD_CONFIG:-configs/reward_qwen0.5b.yaml}
PPO_CONFIG=${PPO_CONFIG:-configs/ppo_qwen0.5b.yaml}
SAMPLE_LAUNCH=${SAMPLE_LAUNCH:-launch/ddp.yaml}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-256}

stages=(sft sample rank export reward ppo)
start=-1
for i in "${!stages[@]}"; do [[ ${stages[$i]} == "$FROM" ]] && start=$i; done
if [[ $start -lt 0 ]]; then echo "error: FROM=$FROM is not one of: ${stages[*]}" >&2; exit 2; fi
at() { [[ $start -le $1 ]]; }
launch() { accelerate launch --config_file "$LAUNCH" --num_processes "$GPUS" -m alignment "$@"; }
say() { echo "[$(date +%H:%M:%S)] $*"; }

# People rank in stage 3: check for their accounts now rather than after hours of SFT.
if at 2 && ! python -m alignment rank users list store="$STORE" 2>/dev/null | grep -qw admin; then
    mkdir -p "$(dirname "$STORE")" 2>/dev/null || true
    echo "error: no admin account in $STORE; create the accounts first:" >&2
    echo "  rlhf rank users add alice store=$STORE role=admin   (and one annotator account per person)" >&2
    exit 2
fi

if at 0; then
    say "1/6 SFT of $MODEL on $SFT_DATA ($GPUS processes, $LAUNCH)"
    launch sft "$SFT_CONFIG" output_dir="$RUN/sft" model.name_or_path="$MODEL" data.path="$SFT_DATA"
fi

if at 1; then
    say "2/6 sampling $K completions per prompt of $PROMPTS into $STORE (prompts sharded over GPUs)"
    accelerate launch --config_file "$SAMPLE_LAUNCH" --num_processes "$GPUS" -m alignment sample configs/sample.yaml \
        output_dir="$RUN/sample" store="$STORE" model.name_or_path="$RUN/sft" prompts="$PROMPTS" \
        split="$PROMPTS_SPLIT" limit="$PROMPTS_LIMIT" k="$K" repeats=1 max_new_tokens="$MAX_NEW_TOKENS"
fi

if at 2; then
    say "3/6 ranking app on http://$HOST:$PORT; waiting for rankings (Ctrl-C pauses; FROM=rank resumes)"
    python -m alignment rank serve configs/rank.yaml output_dir="$RUN" store="$STORE" host="$HOST" port="$PORT" \
        annotators_per_task="$PER_TASK" &
    server=$!
    trap 'kill $server 2>/dev/null || true' EXIT
    # `rlhf rank status` counts what the app counts: rankings so far and rankings_needed (tasks x N).
    until python -m alignment rank status store="$STORE" annotators_per_task="$PER_TASK" json=true | python -c '
import json, sys
o = json.load(sys.stdin)["overview"]
done, need = o["rankings"], int(sys.argv[1]) or o["rankings_needed"]
print(f"rankings {done}/{need}", flush=True)
sys.exit(done < need)' "$RANKINGS"
    do sleep 60; done
    kill $server; wait $server 2>/dev/null || true
    trap - EXIT
fi

if at 3; then
    say "4/6 export: K-wise and pairwise datasets, train/test split by prompt"
    python -m alignment rank export store="$STORE" output_dir="$RUN/export"
fi

if at 4; then
    say "5/6 reward model: LoRA + score head on the SFT model ($GPUS processes, $LAUNCH)"
    launch reward "$REWARD_CONFIG" output_dir="$RUN/reward" model.name_or_path="$RUN/sft" \
        data.path="$RUN/export/kwise" data.eval_path="$RUN/export/kwise"
fi

if at 5; then
    say "6/6 PPO: policy, value and reward adapters on one frozen SFT base ($GPUS processes, $LAUNCH)"
    launch ppo "$PPO_CONFIG" output_dir="$RUN/ppo" model.name_or_path="$RUN/sft" \
        reward.path="$RUN/reward" data.path="$RUN/export/kwise"
    say "done: the policy adapter is in $RUN/ppo; compare it with SFT on held-out prompts:"
    echo "  rlhf eval configs/eval.yaml run=$RUN judge=null data.path=$PROMPTS data.split=test_sft data.limit=500"
fi
