#!/usr/bin/env bash
# The GPU figures in one prepared run (about 5 minutes on one GPU), logs under OUT:
#   env.txt       GPU, torch, commit
#   pytest.txt    the batch transform on CUDA gives the CPU's bits (tests/test_data_batch_transform.py)
#   cli.txt       a tiny training through `segtrain train` on CUDA (AMP, channels_last, the prefetcher):
#                 SIGTERM mid-epoch -> checkpoint and exit 3 (seconds to exit), then resume -> exit 0
#   train.txt     scripts/bench/train.py --gpu: fp32 / AMP / AMP + channels_last, bare loop vs
#                 trainer, syncs off (values read every 50 steps) vs on (every step)
#   data.txt      scripts/bench/data.py on smaller scenes, if time is left
# Usage: scripts/bench/gpu_check.sh OUT [WHEELS]   (WHEELS: a folder of wheels to install first,
# e.g. segmentation-models-pytorch where the machine lacks it; without smp, segtrain's own U-Net).
# To try the script on a CPU: GPU_CHECK_DEVICE=cpu GPU_CHECK_EXTRA="more overrides" (benchmarks skipped).
set -u
device=${GPU_CHECK_DEVICE:-cuda}
read -r -a extra <<<"${GPU_CHECK_EXTRA:-}"
out=${1:?usage: gpu_check.sh OUT [WHEELS]}
mkdir -p "$out"
start=$SECONDS
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled WANDB_SILENT=true
if [ -n "${2:-}" ] && ls "$2"/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$2"/*.whl \
        && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
model=()
python3 -c "import segmentation_models_pytorch" 2>/dev/null || model=(model.arch=unet model.depth=4 model.base_width=32)
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(), 'bf16', torch.cuda.is_bf16_supported())"
    git log --oneline -1 2>/dev/null
    echo "model overrides: ${model[*]:-(configs/default.yaml: smp Unet resnet34)}"
    nproc
} >"$out/env.txt" 2>&1
cat "$out/env.txt"

echo "== transform on CUDA"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_data_batch_transform.py >"$out/pytest.txt" 2>&1
tail -n 3 "$out/pytest.txt"

echo "== tiny CLI training on CUDA: SIGTERM, resume"
(
    set -u
    data=/tmp/gpucheck-data run=/tmp/gpucheck-run
    rm -rf "$data" "$run"
    python3 -m segtrain make-demo-data "$data" --train 6 --val 2 --test 0 --max-size 600
    args=(configs/default.yaml "data.root=$data" train.epochs=2 data.tiles_per_epoch=3200 train.batch_size=32
          data.num_workers=8 logging.every_steps=10 train.checkpoint_every_steps=40 "train.device=$device"
          train.amp=auto train.channels_last=true optim.warmup_steps=0 logging.wandb.mode=disabled "${model[@]}"
          "${extra[@]}")
    python3 -m segtrain train "${args[@]}" --run-dir "$run" >/tmp/gpucheck-first.log 2>&1 &
    pid=$!
    for _ in $(seq 600); do grep -qs '"step": 60,' "$run/metrics.jsonl" && break; sleep 0.1; done
    t0=$(date +%s.%N)
    kill -TERM $pid
    wait $pid
    code=$?
    t1=$(date +%s.%N)
    cat /tmp/gpucheck-first.log
    python3 - "$run" "$code" "$t0" "$t1" <<'EOF'
import json, sys, torch
run, code, t0, t1 = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
pos = torch.load(f"{run}/checkpoints/last.pt", weights_only=True, map_location="cpu")["position"]
print(f"SIGTERM (sent at step 60 or after 60 s): exit {code} in {t1 - t0:.2f} s, checkpoint at {pos}")
EOF
    python3 -m segtrain train "${args[@]}" --run-dir "$run" >/tmp/gpucheck-second.log 2>&1
    code=$?
    cat /tmp/gpucheck-second.log
    python3 - "$run" "$code" <<'EOF'
import json, sys
run, code = sys.argv[1], int(sys.argv[2])
records = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
train = [r for r in records if r["split"] == "train"]
val = [r for r in records if r["split"] == "val"]
info = json.load(open(f"{run}/run.json"))
print(f"resume: exit {code}; status {info['status']}; segments {[s['exit_code'] for s in info['segments']]}; "
      f"steps {train[0]['step']}..{train[-1]['step']}; last loss {train[-1]['loss']:.4f}; "
      f"tiles/s {[round(r['tiles_per_s']) for r in train[-5:]]}; data_wait {[round(r['data_wait'], 3) for r in train[-5:]]}; "
      f"val iou {[round(r['iou'], 4) for r in val]}")
EOF
) >"$out/cli.txt" 2>&1
grep -E "^(SIGTERM|resume|error|Traceback)" "$out/cli.txt"

[ "$device" = cuda ] || { echo "total $((SECONDS - start)) s (no benchmarks on $device)"; exit 0; }
echo "== bench/train.py --gpu"
timeout 300 python3 scripts/bench/train.py --gpu ${model[@]:+--override "${model[@]}"} >"$out/train.txt" 2>&1
grep -vE "^(epoch|run |done|stopping)" "$out/train.txt" | tail -n 12

if [ $((SECONDS - start)) -lt 230 ]; then
    echo "== bench/data.py (2 scenes of 4 x 5490^2)"
    timeout $((330 - (SECONDS - start))) python3 scripts/bench/data.py --size 5490 --tiles 400 --baseline "" >"$out/data.txt" 2>&1
    tail -n 16 "$out/data.txt"
fi
echo "total $((SECONDS - start)) s"
