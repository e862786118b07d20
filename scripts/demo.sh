#!/usr/bin/env bash
# The README's demo command, end to end on a CPU: set up ./.venv, generate synthetic CT phantoms, pretrain a tiny
# SMART encoder on them (smart_pretrain), cluster their organs from its frozen features (Task IV, against a random
# encoder), finetune it for tumour segmentation (smart_seg) and segment the validation phantoms, printing their
# Dice, then trains the response endpoint (smart_response) and prints its validation AUC
# with a bootstrap 95% CI, and exports both models to ONNX (TensorRT on a CUDA machine that has it) and checks that
# the exported models predict what PyTorch does.
#   DATA_DIR (default data/phantoms)  NUM_PHANTOMS (default 16)  FAST_MALLOC=0 to keep glibc's default allocator
set -euo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
. scripts/setup_env.sh "export,cluster"
DATA_DIR="${DATA_DIR:-data/phantoms}"
NUM_PHANTOMS="${NUM_PHANTOMS:-16}"
if [ "${FAST_MALLOC:-1}" != "0" ]; then
    # keep freed memory in the heap instead of returning it to the kernel: CPU training spends 40-50% of its time
    # mapping and unmapping large tensors otherwise (measured 1.6x faster, 20-80% more peak memory)
    export GLIBC_TUNABLES="glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"
fi

# Each step's output goes to its log, outputs/logs/stepN_<name>.log; a failing step says which it is, where its log
# is, and shows the log's last lines.
LOGS=outputs/logs
mkdir -p "$LOGS"
STEP=0 WHAT="" LOG=/dev/null
step() {  # step N NAME WHAT MESSAGE: start step N, logging to $LOGS/stepN_NAME.log
    STEP=$1 WHAT=$3 LOG="$LOGS/step$1_$2.log"
    : >"$LOG"
    echo "[demo] $1/9 $4"
}
failed() {  # failed [WHY]: stop the demo, naming the step and its log, and show the log's last lines
    echo "[demo] step $STEP ($WHAT) failed; see $LOG" >&2
    [ -z "${1:-}" ] || echo "[demo]   $1" >&2
    echo "[demo]   last lines of $LOG:" >&2
    tail -n 25 "$LOG" | sed 's/^/[demo]   | /' >&2
    exit 1
}
run() {  # run CMD...: CMD's output to the step's log; stop the demo if it fails
    "$@" >>"$LOG" 2>&1 || failed "exit status $? of: $*"
}
run_shown() {  # run_shown FILTER CMD...: as run, and print the lines of CMD's output that FILTER keeps as they come
    local filter=$1 status=0
    shift
    "$@" 2>&1 | tee -a "$LOG" | { "$filter" || true; } || status=$?
    [ "$status" = 0 ] || failed "exit status $status of: $*"
}
report() {  # report WHAT PATH...: python -m smart_nets.report, its lines prefixed for the demo
    python -m smart_nets.report "$@" 2>>"$LOG" | sed 's/^/[demo]   /' || failed "python -m smart_nets.report $*"
}
pretrain_lines() {
    grep --line-buffered -v "^Epoch \[" \
        | grep --line-buffered -E "Epoch: [0-9]+/[0-9]+, Iter|keeps|collapse monitor|collapse:|saved|finished|Error|error" \
        | sed -u -E 's/^.*(collapse monitor|collapse:|teacher EMA)/[demo]   \1/'
}
seg_lines() { grep --line-buffered -v "^Epoch \[" | grep --line-buffered -E "pretrained encoder|Metrics -- .*val_mean_dice|Error|error"; }
response_lines() { grep --line-buffered -E "Metrics -- .*val_auc|Error|error"; }

step 1 phantoms "phantom generation" "generating $NUM_PHANTOMS CT phantoms in $DATA_DIR"
run python -m smart_nets.data.phantoms "$DATA_DIR" --num "$NUM_PHANTOMS" --seed 0

step 2 smoke "encoder smoke run" "SMARTSwin encoder smoke run"
run python -m smart_nets.smoke "$DATA_DIR/dataset.json" --num 2 --out_dir outputs/smoke

step 3 pretrain "SMART pretraining" "SMART pretraining (bundles/smart_pretrain, configs/demo.json)"
PRE=bundles/smart_pretrain
run_shown pretrain_lines python -m monai.bundle run --config_file "['$PRE/configs/train.json','$PRE/configs/demo.json']" \
    --bundle_root "$PRE" --dataset_dir "$DATA_DIR" --output_dir outputs/pretrain --ckpt_dir outputs/pretrain/models \
    --train#progress_bar#disable true
test -f outputs/pretrain/models/model.pt || failed "pretraining did not write its encoder outputs/pretrain/models/model.pt"

step 4 cluster "Task IV organ clustering" \
    "Task IV: clustering organs of the validation phantoms from frozen features (configs/cluster.json)"
run python -m monai.bundle run --config_file "['$PRE/configs/train.json','$PRE/configs/demo.json','$PRE/configs/cluster.json']" \
    --bundle_root "$PRE" --dataset_dir "$DATA_DIR" --ckpt_dir outputs/pretrain/models --output_dir outputs/pretrain
report clusters outputs/pretrain/clusters/cluster_metrics.json

step 5 seg_train "segmentation finetuning" \
    "finetuning tumour segmentation from the pretrained encoder (bundles/smart_seg, configs/demo.json)"
SEG=bundles/smart_seg
run_shown seg_lines python -m monai.bundle run --config_file "['$SEG/configs/train.json','$SEG/configs/demo.json']" \
    --bundle_root "$SEG" --dataset_dir "$DATA_DIR" --pretrained_path outputs/pretrain/models/model.pt \
    --output_dir outputs/seg --ckpt_dir outputs/seg/models --train#progress_bar#disable true
test -f outputs/seg/models/model.pt || failed "segmentation training did not write its model outputs/seg/models/model.pt"

step 6 seg_eval "segmentation evaluation and inference" \
    "segmenting the validation phantoms and scoring them (configs/evaluate.json + inference.json)"
run python -m monai.bundle run --config_file "['$SEG/configs/train.json','$SEG/configs/demo.json','$SEG/configs/evaluate.json']" \
    --bundle_root "$SEG" --dataset_dir "$DATA_DIR" --ckpt_dir outputs/seg/models --output_dir outputs/seg/evaluation
report seg-eval outputs/seg/evaluation
run python -m monai.bundle run --config_file "['$SEG/configs/inference.json','$SEG/configs/demo.json']" \
    --bundle_root "$SEG" --ckpt_dir outputs/seg/models --output_dir outputs/seg/predictions \
    --datalist "\$[i['image'] for i in smart_nets.data.load_datalist('$DATA_DIR/dataset.json', 'validation')]"
echo "[demo]   masks in the input space: $(ls outputs/seg/predictions/*_seg.nii.gz | wc -l) files in outputs/seg/predictions"
echo "[demo]   tumour volume, longest axial diameter, components per case: outputs/seg/predictions/measurements.csv"

step 7 response_train "outcome prediction training" \
    "outcome prediction (bundles/smart_response, configs/demo.json): 40 phantoms, response endpoint"
OUT_DIR="${DATA_DIR}_outcome"
run python -m smart_nets.data.phantoms "$OUT_DIR" --num 40 --seed 2 --shape "[96,96,48]" --spacing "[3.4,3.4,6.7]" \
    --val_fraction 0.3
RES=bundles/smart_response
run_shown response_lines python -m monai.bundle run --config_file "['$RES/configs/train.json','$RES/configs/demo.json']" \
    --bundle_root "$RES" --dataset_dir "$OUT_DIR" --pretrained_path outputs/pretrain/models/model.pt \
    --output_dir outputs/response --ckpt_dir outputs/response/models --train#progress_bar#disable true
test -f outputs/response/models/model.pt || failed "outcome training did not write its model outputs/response/models/model.pt"

step 8 response_eval "outcome evaluation" "evaluating the response model on the validation phantoms"
run python -m monai.bundle run --config_file "['$RES/configs/train.json','$RES/configs/demo.json','$RES/configs/evaluate.json']" \
    --bundle_root "$RES" --dataset_dir "$OUT_DIR" --ckpt_dir outputs/response/models \
    --output_dir outputs/response/evaluation
report response-eval outputs/response/evaluation/metrics.json

step 9 export "ONNX export and inference" \
    "exporting both models to ONNX and predicting with onnxruntime (configs/inference_onnx.json)"
for B in "$SEG" "$RES"; do
    NAME=$(basename "$B"); MODELS="outputs/${NAME#smart_}/models"
    run python -m monai.bundle onnx_export --args_file "$B/configs/onnx_export.json" --filepath "$MODELS/model.onnx" \
        --ckpt_file "$MODELS/model.pt" --meta_file "$B/configs/metadata.json" \
        --config_file "['$B/configs/inference.json','$B/configs/demo.json']" --input_shape "[1, 1, 64, 64, 64]"
    run python -m smart_nets.export check "$MODELS/model.onnx"  # against the TensorRT 10 operator list it ships
    tail -n 1 "$LOG" | sed "s/^/[demo]   $NAME model.onnx: /"
done
VAL="\$[i['image'] for i in smart_nets.data.load_datalist('$DATA_DIR/dataset.json', 'validation')]"
run python -m monai.bundle run --config_file "['$SEG/configs/inference.json','$SEG/configs/demo.json','$SEG/configs/inference_onnx.json']" \
    --bundle_root "$SEG" --ckpt_dir outputs/seg/models --output_dir outputs/seg/predictions_onnx --datalist "$VAL"
RVAL="\$[i['image'] for i in smart_nets.data.load_datalist('$OUT_DIR/dataset.json', 'validation')]"
for RUNTIME in torch onnx; do
    EXTRA=$([ $RUNTIME = torch ] && echo "" || echo ",'$RES/configs/inference_onnx.json'")
    run python -m monai.bundle run --config_file "['$RES/configs/inference.json','$RES/configs/demo.json'$EXTRA]" \
        --bundle_root "$RES" --ckpt_dir outputs/response/models --output_dir "outputs/response/predictions_$RUNTIME" \
        --datalist "$RVAL"
done
report export-agreement --seg outputs/seg/predictions outputs/seg/predictions_onnx \
    --response outputs/response/predictions_torch outputs/response/predictions_onnx
TRT=$(python -c "from smart_nets.export import tensorrt_status as s; ok, why = s(); print(why if not ok else '')" 2>>"$LOG") \
    || failed "smart_nets.export.tensorrt_status could not be asked"
if [ -z "$TRT" ]; then
    run python -m monai.bundle run --config_file "['$SEG/configs/inference.json','$SEG/configs/demo.json','$SEG/configs/inference_trt.json']" \
        --bundle_root "$SEG" --ckpt_dir outputs/seg/models --output_dir outputs/seg/predictions_trt --datalist "$VAL" \
        --trt_required true
    echo "[demo]   TensorRT fp16 masks in outputs/seg/predictions_trt"
else
    echo "[demo]   TensorRT skipped: $TRT (configs/inference_trt.json would warn and run PyTorch)"
fi

echo "[demo] done in $(( $(date +%s) - START )) s: phantoms in $DATA_DIR and $OUT_DIR, attention maps in outputs/smoke,"
echo "       pretrained encoder outputs/pretrain/models/model.pt, segmentation model outputs/seg/models/model.pt,"
echo "       response model outputs/response/models/model.pt, ONNX models beside them, TensorBoard logs under outputs/,"
echo "       each step's log in $LOGS"
