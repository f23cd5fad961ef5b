#!/usr/bin/env bash
# Issue 25's GPU figures in one call, sized for a lent GPU's 15 minutes (~8 min on an H200
# by the issue's timings): the CUDA tests, step throughput in fp32 and bf16, a full-data
# mine + finetune of a few epochs (epoch times), four runs side by side
# (`gemminer sweep --jobs 4`), and issue 29's compact networks timed on the device.
# Everything it writes goes under $OUT (default benchmarks/results/gpu-session); copy the
# figures into benchmarks/results/ with the GPU, torch version and date.
#
# On the device (the checkout as it is, torch preinstalled, no package index):
#   run(command="OUT=$OUT bash benchmarks/gpu_session.sh", carry=[".data/cifar10-jpeg.tar.gz"])
# after `cp ../shared/datasets/cifar10-jpeg.tar.gz .data/` here. Try it on the CPU first:
#   PY=.venv/bin/python DEVICE=cpu QUICK=1 OUT=/tmp/gpu-session bash benchmarks/gpu_session.sh
set -u
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-benchmarks/results/gpu-session}
QUICK=${QUICK:-0}
PY=${PY:-python3}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT"
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/session.log"; }
timed() {  # timed NAME COMMAND...: run, keep its output, note its wall time and status
  local name=$1; shift
  local start=$SECONDS
  "$@" > "$OUT/$name.txt" 2>&1
  local status=$?
  log "$name: exit $status, $((SECONDS - start)) s"
}

if [ ! -d .data/cifar10/train ] && [ -f .data/cifar10-jpeg.tar.gz ]; then
  mkdir -p .data/cifar10 && tar xzf .data/cifar10-jpeg.tar.gz -C .data/cifar10
fi
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
  torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" | tee "$OUT/device.txt"

if [ "$QUICK" = 1 ]; then
  STEPS=(--quick); IMAGES=(); EPOCHS=1; TRAIN=(--train-size 512)
else
  STEPS=(--steps 40 --repeats 3); IMAGES=(--images 50000); EPOCHS=3; TRAIN=()
fi

[ "$DEVICE" = cuda ] && timed pytest_gpu $PY -m pytest -q -m gpu tests/test_gpu.py
for precision in fp32 bf16; do
  timed "throughput_$precision" $PY benchmarks/throughput.py --device "$DEVICE" \
    --precision "$precision" "${STEPS[@]}" "${IMAGES[@]}" \
    --out "$OUT/throughput_resnet20_${DEVICE}_$precision.md"
done
# epoch times: mining and finetuning on the full data (the demo's command, fewer epochs)
timed mine_finetune $PY -m gemminer mine --device "$DEVICE" --data-dir .data/cifar10 \
  --epochs "$EPOCHS" --finetune --eval-every "$EPOCHS" "${TRAIN[@]}" --no-progress \
  --out "$OUT/runs/mine"
# four runs side by side
cat > "$OUT/four.yaml" <<EOF
base: {model: resnet20, dataset: cifar10, data_dir: .data/cifar10, epochs: $EPOCHS,
       eval_every: $EPOCHS, device: $DEVICE$([ "$QUICK" = 1 ] && echo ", train_size: 512")}
grid: {method: [gem-miner], seed: [0, 1, 2, 3]}
finetune: true
out: $OUT/runs/four
EOF
timed sweep_jobs4 $PY -m gemminer sweep "$OUT/four.yaml" --jobs 4
# issue 29: compact channel networks against the dense ones on this device
if [ "$QUICK" = 1 ]; then REPEATS=(--repeats 2 1 --models resnet20); else REPEATS=(--repeats 200 20); fi
timed structured_inference $PY benchmarks/structured_inference.py --devices "$DEVICE" \
  --threads 1 "${REPEATS[@]}" --report "$OUT/structured_inference_$DEVICE"
grep -h "mine epoch\|finetune epoch" "$OUT/mine_finetune.txt" | tail -4 | tee -a "$OUT/session.log"
tail -n 2 "$OUT"/throughput_*.txt | tee -a "$OUT/session.log"
log "done"
