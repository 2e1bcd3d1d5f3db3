"""DeepSparse vs ONNX Runtime on the same ONNX files and real inputs (run in .venv-deepsparse).

``experiments/deploy_minilm.py parity`` writes tokenised SST-2 dev sentences to an ``.npz`` file
and calls this script with the DeepSparse environment's Python; it needs only numpy,
onnxruntime and deepsparse, so it runs where torch is not installed.

Usage::

    .venv-deepsparse/bin/python experiments/ds_parity.py INPUTS.npz OUT.json MODEL.onnx [...]
"""

from __future__ import annotations

import json
from pathlib import Path

from _common import make_parser


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("inputs", help="the .npz file of tokenised inputs")
    parser.add_argument("out", help="the JSON file written")
    parser.add_argument("models", nargs="*", metavar="MODEL.onnx")
    args = parser.parse_args()
    inputs, out, models = args.inputs, args.out, args.models
    import numpy as np
    import onnxruntime as ort
    from deepsparse import Engine

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
