"""DeepSparse vs ONNX Runtime on the same ONNX files and real inputs (run in .venv-deepsparse).

``experiments/deploy_minilm.py parity`` writes tokenised SST-2 dev sentences to an ``.npz`` file
and calls this script with the DeepSparse environment's Python; it needs only numpy,
onnxruntime and deepsparse, so it runs where torch is not installed.

Usage::

    .venv-deepsparse/bin/python experiments/ds_parity.py INPUTS.npz OUT.json MODEL.onnx [...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from deepsparse import Engine


def main() -> None:
    inputs, out, *models = sys.argv[1:]
    data = np.load(inputs)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in data.files]
    rows = []
    for path in models:
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        batch = int(session.get_inputs()[0].shape[0])
        engine = Engine(path, batch_size=batch, num_cores=2)
        n = (len(data[names[0]]) // batch) * batch
        diffs, agree = [], 0
        for start in range(0, n, batch):
            feed = [data[k][start : start + batch].astype(np.int64) for k in names]
            ds = engine.run(feed)[0]
            ref = session.run(None, dict(zip(names, feed, strict=True)))[0]
            diffs.append(float(np.abs(ds - ref).max()))
            agree += int((ds.argmax(-1) == ref.argmax(-1)).sum())
        rows.append(
            {
                "model": Path(path).name,
                "examples": n,
                "max_abs_diff": max(diffs),
                "argmax_agreement": agree / n,
            }
        )
        print(f"{Path(path).name}: max |DeepSparse - ORT| {max(diffs):.2e}, same class {agree}/{n}")
    Path(out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
