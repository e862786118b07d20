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

echo "[demo] 1/9 generating $NUM_PHANTOMS CT phantoms in $DATA_DIR"
python -m smart_nets.data.phantoms "$DATA_DIR" --num "$NUM_PHANTOMS" --seed 0 >/dev/null

echo "[demo] 2/9 SMARTSwin encoder smoke run"
python -m smart_nets.smoke "$DATA_DIR/dataset.json" --num 2 --out_dir outputs/smoke >/dev/null

echo "[demo] 3/9 SMART pretraining (bundles/smart_pretrain, configs/demo.json)"
PRE=bundles/smart_pretrain
python -m monai.bundle run --config_file "['$PRE/configs/train.json','$PRE/configs/demo.json']" \
    --bundle_root "$PRE" --dataset_dir "$DATA_DIR" --output_dir outputs/pretrain --ckpt_dir outputs/pretrain/models \
    --train#progress_bar#disable true \
    2>&1 | grep -v "^Epoch \[" | grep -E "Epoch: [0-9]+/[0-9]+, Iter|keeps|collapse monitor|collapse:|saved|finished|Error|error" \
    | sed -E 's/^.*(collapse monitor|collapse:|teacher EMA)/[demo]   \1/' || true
test -f outputs/pretrain/models/model.pt || { echo "[demo] pretraining did not write its encoder" >&2; exit 1; }

echo "[demo] 4/9 Task IV: clustering organs of the validation phantoms from frozen features (configs/cluster.json)"
python -m monai.bundle run --config_file "['$PRE/configs/train.json','$PRE/configs/demo.json','$PRE/configs/cluster.json']" \
    --bundle_root "$PRE" --dataset_dir "$DATA_DIR" --ckpt_dir outputs/pretrain/models --output_dir outputs/pretrain \
    >/dev/null 2>&1 || { echo "[demo] organ clustering failed" >&2; exit 1; }
python - <<'PY'
import json
r = json.load(open("outputs/pretrain/clusters/cluster_metrics.json"))
for name, m in r["encoders"].items():
    print(f"[demo]   {name:<11} centroid distance {m['inter_class_distance']:6.2f} (x{m['separation_ratio']:.2f} the "
          f"spread), silhouette {m['silhouette']:+.3f}, k-means ARI {m['kmeans_ari']:.3f} "
          f"({m['n_embeddings']} organ embeddings, {r['n_images']} images)")
print("[demo]   scatter plot outputs/pretrain/clusters/cluster_scatter.png")
PY

echo "[demo] 5/9 finetuning tumour segmentation from the pretrained encoder (bundles/smart_seg, configs/demo.json)"
SEG=bundles/smart_seg
python -m monai.bundle run --config_file "['$SEG/configs/train.json','$SEG/configs/demo.json']" \
    --bundle_root "$SEG" --dataset_dir "$DATA_DIR" --pretrained_path outputs/pretrain/models/model.pt \
    --output_dir outputs/seg --ckpt_dir outputs/seg/models --train#progress_bar#disable true \
    2>&1 | grep -v "^Epoch \[" | grep -E "pretrained encoder|Metrics -- .*val_mean_dice|Error|error" || true
test -f outputs/seg/models/model.pt || { echo "[demo] segmentation training did not write its model" >&2; exit 1; }

echo "[demo] 6/9 segmenting the validation phantoms and scoring them (configs/evaluate.json + inference.json)"
python -m monai.bundle run --config_file "['$SEG/configs/train.json','$SEG/configs/demo.json','$SEG/configs/evaluate.json']" \
    --bundle_root "$SEG" --dataset_dir "$DATA_DIR" --ckpt_dir outputs/seg/models --output_dir outputs/seg/evaluation \
    >/dev/null 2>&1
python - <<'PY'
import csv
rows = list(csv.reader(open("outputs/seg/evaluation/val_mean_dice_raw.csv")))
for row in rows[1:]:
    print(f"[demo]   {row[0].split('/')[-1]:<28} tumour Dice {float(row[-1]):.3f}")
metrics = dict(line.split(",") for line in open("outputs/seg/evaluation/metrics.csv").read().split())
print(f"[demo]   mean tumour Dice {float(metrics['val_mean_dice']):.3f}, HD95 {float(metrics['val_hausdorff95']):.1f} mm")
PY
python -m monai.bundle run --config_file "['$SEG/configs/inference.json','$SEG/configs/demo.json']" \
    --bundle_root "$SEG" --ckpt_dir outputs/seg/models --output_dir outputs/seg/predictions \
    --datalist "\$[i['image'] for i in smart_nets.data.load_datalist('$DATA_DIR/dataset.json', 'validation')]" \
    >/dev/null 2>&1
echo "[demo]   masks in the input space: $(ls outputs/seg/predictions/*_seg.nii.gz | wc -l) files in outputs/seg/predictions"

echo "[demo] 7/9 outcome prediction (bundles/smart_response, configs/demo.json): 40 phantoms, response endpoint"
OUT_DIR="${DATA_DIR}_outcome"
python -m smart_nets.data.phantoms "$OUT_DIR" --num 40 --seed 2 --shape "[96,96,48]" --spacing "[3.4,3.4,6.7]" \
    --val_fraction 0.3 >/dev/null 2>&1
RES=bundles/smart_response
python -m monai.bundle run --config_file "['$RES/configs/train.json','$RES/configs/demo.json']" \
    --bundle_root "$RES" --dataset_dir "$OUT_DIR" --pretrained_path outputs/pretrain/models/model.pt \
    --output_dir outputs/response --ckpt_dir outputs/response/models --train#progress_bar#disable true \
    2>&1 | grep -E "Metrics -- .*val_auc|Error|error" || true
test -f outputs/response/models/model.pt || { echo "[demo] outcome training did not write its model" >&2; exit 1; }

echo "[demo] 8/9 evaluating the response model on the validation phantoms"
python -m monai.bundle run --config_file "['$RES/configs/train.json','$RES/configs/demo.json','$RES/configs/evaluate.json']" \
    --bundle_root "$RES" --dataset_dir "$OUT_DIR" --ckpt_dir outputs/response/models \
    --output_dir outputs/response/evaluation >/dev/null 2>&1
python - <<'PY'
import json
r = json.load(open("outputs/response/evaluation/metrics.json"))
print(f"[demo]   {r['endpoint']}: AUC {r['auc']:.3f} (95% CI {r['ci_low']:.3f}-{r['ci_high']:.3f}; n={r['n']}, "
      f"{r['n_positive']} positive), accuracy {r['accuracy']:.2f}, sensitivity {r['sensitivity']:.2f}, "
      f"specificity {r['specificity']:.2f}; ROC curve outputs/response/evaluation/roc.png")
PY

echo "[demo] 9/9 exporting both models to ONNX and predicting with onnxruntime (configs/inference_onnx.json)"
for B in "$SEG" "$RES"; do
    NAME=$(basename "$B"); MODELS="outputs/${NAME#smart_}/models"
    python -m monai.bundle onnx_export --args_file "$B/configs/onnx_export.json" --filepath "$MODELS/model.onnx" \
        --ckpt_file "$MODELS/model.pt" --meta_file "$B/configs/metadata.json" \
        --config_file "['$B/configs/inference.json','$B/configs/demo.json']" --input_shape "[1, 1, 64, 64, 64]" \
        >/dev/null 2>&1 || { echo "[demo] ONNX export of $NAME failed" >&2; exit 1; }
    python -m smart_nets.export check "$MODELS/model.onnx" \
        | tail -n 1 | sed "s/^/[demo]   $NAME model.onnx: /"
done
VAL="\$[i['image'] for i in smart_nets.data.load_datalist('$DATA_DIR/dataset.json', 'validation')]"
python -m monai.bundle run --config_file "['$SEG/configs/inference.json','$SEG/configs/demo.json','$SEG/configs/inference_onnx.json']" \
    --bundle_root "$SEG" --ckpt_dir outputs/seg/models --output_dir outputs/seg/predictions_onnx --datalist "$VAL" \
    >/dev/null 2>&1
RVAL="\$[i['image'] for i in smart_nets.data.load_datalist('$OUT_DIR/dataset.json', 'validation')]"
for RUNTIME in torch onnx; do
    EXTRA=$([ $RUNTIME = torch ] && echo "" || echo ",'$RES/configs/inference_onnx.json'")
    python -m monai.bundle run --config_file "['$RES/configs/inference.json','$RES/configs/demo.json'$EXTRA]" \
        --bundle_root "$RES" --ckpt_dir outputs/response/models --output_dir "outputs/response/predictions_$RUNTIME" \
        --datalist "$RVAL" >/dev/null 2>&1
done
python - <<'PY'
import csv, glob, os
import nibabel as nib, numpy as np
agree = []
for onnx_mask in sorted(glob.glob("outputs/seg/predictions_onnx/*_seg.nii.gz")):
    torch_mask = os.path.join("outputs/seg/predictions", os.path.basename(onnx_mask))
    agree.append((np.asanyarray(nib.load(onnx_mask).dataobj) == np.asanyarray(nib.load(torch_mask).dataobj)).mean())
print(f"[demo]   segmentation: onnxruntime masks agree with PyTorch's on {100 * min(agree):.3f}% of voxels or more "
      f"({len(agree)} cases, outputs/seg/predictions_onnx)")
rows = [list(csv.DictReader(open(f"outputs/response/predictions_{s}/predictions.csv"))) for s in ("torch", "onnx")]
diff = max(abs(float(a["prob_1"]) - float(b["prob_1"])) for a, b in zip(*rows))
print(f"[demo]   response: onnxruntime probabilities within {diff:.1e} of PyTorch's ({len(rows[1])} cases)")
PY
TRT=$(python -c "from smart_nets.export import tensorrt_status as s; ok, why = s(); print(why if not ok else '')")
if [ -z "$TRT" ]; then
    python -m monai.bundle run --config_file "['$SEG/configs/inference.json','$SEG/configs/demo.json','$SEG/configs/inference_trt.json']" \
        --bundle_root "$SEG" --ckpt_dir outputs/seg/models --output_dir outputs/seg/predictions_trt --datalist "$VAL" \
        --trt_required true >/dev/null 2>&1 || { echo "[demo] TensorRT inference failed" >&2; exit 1; }
    echo "[demo]   TensorRT fp16 masks in outputs/seg/predictions_trt"
else
    echo "[demo]   TensorRT skipped: $TRT (configs/inference_trt.json would warn and run PyTorch)"
fi

echo "[demo] done in $(( $(date +%s) - START )) s: phantoms in $DATA_DIR and $OUT_DIR, attention maps in outputs/smoke,"
echo "       pretrained encoder outputs/pretrain/models/model.pt, segmentation model outputs/seg/models/model.pt,"
echo "       response model outputs/response/models/model.pt, ONNX models beside them, TensorBoard logs under outputs/"
