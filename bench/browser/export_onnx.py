"""Exports a HF sequence-classification checkpoint to ONNX for transformers.js (the reference in
bench/browser/run.mjs): OUT/{config.json, tokenizer.json, tokenizer_config.json, onnx/model.onnx}.

    python3 bench/browser/export_onnx.py MODEL_DIR OUT_DIR

Needs torch, transformers and onnx (pip install onnx). f32, dynamic batch and sequence axes.
"""
import pathlib
import shutil
import sys

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

source, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
model = AutoModelForSequenceClassification.from_pretrained(source).eval()
tokenizer = AutoTokenizer.from_pretrained(source)
(out / "onnx").mkdir(parents=True, exist_ok=True)
tokenizer.save_pretrained(out)
shutil.copy(source / "config.json", out / "config.json")
example = tokenizer(["a short example", "another, slightly longer example text"], padding=True,
                    return_tensors="pt")
names = ["input_ids", "attention_mask", "token_type_ids"]
axes = {name: {0: "batch", 1: "sequence"} for name in names}
axes["logits"] = {0: "batch"}
with torch.no_grad():
    torch.onnx.export(model, tuple(example[n] for n in names), out / "onnx" / "model.onnx",
                      input_names=names, output_names=["logits"], dynamic_axes=axes,
                      opset_version=17, dynamo=False)
print(f"wrote {out}/onnx/model.onnx")
