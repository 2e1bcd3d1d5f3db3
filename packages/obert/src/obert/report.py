"""The quickstart report: ``report.md``, ``report.json`` and three PNG plots.

* ``quickstart_accuracy.png``: dev metric against weight sparsity, one line per unstructured
  pruning method (the points after each pruning step's recovery and the final model), the
  dense model as a line; the structured model is left out (its sparsity is a fraction of
  neurons and heads: the summary and the curve table state both);
* ``quickstart_latency.png``: p50 latency and items/s per model, engine and batch size
  (:func:`obert_deploy.plot_results`);
* ``quickstart_size.png``: file size and best compressed size per model.

The summary starts with the speed-up: the best one on ONNX Runtime over the dense fp32 model (which
model, which batch size) and, when DeepSparse ran, the pruned model's there; the structured model's
row gives its speed-up over dense fp32 on ONNX Runtime at every batch size, and the report says
where its physically smaller checkpoint is. The report names the machine (CPU model, AVX2 / AVX-512
/ VNNI / AMX flags, cores, load average), the package versions, every stage with its time (and
whether it was reused), and the commands that reproduce the run: the ``obert quickstart`` command
itself and the same stages with the ``obert-train`` / ``obert-deploy`` command lines.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from obert.cache import StageRecord
from obert.config import QuickstartConfig
from obert.defaults import STRUCTURED_LABEL
from obert.machine import machine_info
from obert.preflight import Prepared
from obert_core.shared import atomic_write_bytes, format_metric, metric_unit

__all__ = [
    "ACCURACY_PLOT",
    "LATENCY_PLOT",
    "REPORT_FILES",
    "SIZE_PLOT",
    "build_report",
    "foreign_report_files",
    "model_name",
    "render_markdown",
    "speedup_summary",
    "summary_table",
    "write_report",
]

ACCURACY_PLOT = "quickstart_accuracy.png"
LATENCY_PLOT = "quickstart_latency.png"
SIZE_PLOT = "quickstart_size.png"


def model_name(source: str) -> str:
    """A short name of a model folder or hub id (a folder called ``model``: its parent's)."""
    path = Path(source)
    return path.parent.name if path.name == "model" and path.parent.name else path.name


def _data_name(config: QuickstartConfig) -> str:
    data = config.data
    if config.uses_shipped_data:
        return "synthetic sentiment data"
    for source in (data.dataset, data.data_dir, data.train_file):
        if source is not None:
            return Path(source).name if isinstance(source, Path) else str(source)
    return config.task


def _pct(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}"


def _sparsity(entry: dict[str, Any]) -> str:
    """Weight sparsity in percent; structured pruning: the atoms removed first (issue 18)."""
    structure = entry.get("structure")
    if structure:
        parts = [
            f"{_pct(structure[key], 1)} of {what}"
            for key, what in (("neurons", "FFN neurons"), ("heads", "heads"))
            if structure.get(key) is not None
        ]
        return f"{', '.join(parts)} ({_pct(entry.get('sparsity'), 1)} of weights)"
    if "atom_sparsity" not in entry:
        return _pct(entry.get("sparsity"), 1)
    atoms, weights = _pct(entry["atom_sparsity"], 1), _pct(entry.get("sparsity"), 1)
    return f"{atoms} of atoms ({weights} of weights)"


def _metric(metric: str, value: float | None) -> str:
    """A metric cell by its unit (the header carries it: :func:`_metric_head`)."""
    return "–" if value is None else format_metric(metric, value, with_unit=False)


def _metric_head(metric: str) -> str:
    return f"{metric} %" if metric_unit(metric) == "percent" else metric


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _mb(value: float | None) -> str:
    return "–" if value is None else f"{value / 1e6:.2f}"


def _quote(value: Any) -> str:
    return shlex.quote(str(value))


def _data_args(config: QuickstartConfig, prepared: Prepared) -> list[str]:
    from obert.defaults import shipped_data_dir

    data = config.data
    split = ":".join(str(n) for n in data.split_articles) if data.split_articles else None
    args = ["--task", config.task]
    if config.uses_shipped_data:
        args += ["--data-dir", str(shipped_data_dir())]
    for flag, value in (
        ("--data-dir", data.data_dir),
        ("--dataset", data.dataset),
        ("--train-file", data.train_file),
        ("--dev-file", data.dev_file),
        ("--max-train-samples", data.max_train_samples),
        ("--max-eval-samples", data.max_eval_samples),
        ("--label-column", data.label_column),
        ("--doc-stride", data.doc_stride),
        ("--max-query-length", data.max_query_length),
        ("--split-articles", split),
        ("--split-seed", data.split_seed),
    ):
        if value is not None:
            args += [flag, str(value)]
    for column in data.text_columns or ():
        args += ["--text-column", column]
    return [*args, "--max-seq-length", str(config.seq_len)]


def _labels(prepared: Prepared, stages: Mapping[str, Any]) -> list[str]:
    """The trained models of this run, in stage order: dense, pruned, baseline, structured."""
    every = [
        "dense",
        prepared.pruned_label,
        prepared.baseline_label,
        *([prepared.structured_label] if prepared.structured_recipe is not None else []),
    ]  # --recipe's label may be "structured" (its method's name)
    return [label for label in every if label is not None and label in stages]


def stage_commands(
    config: QuickstartConfig, prepared: Prepared, stages: dict[str, StageRecord]
) -> list[str]:
    """The stages as ``obert-train`` / ``obert-deploy`` command lines (without the curve evals)."""
    labels = _labels(prepared, stages)
    data = " ".join(_quote(a) for a in _data_args(config, prepared))
    train = f"--batch-size {config.batch_size} --seed {config.seed}"
    lines: list[str] = []
    dense = stages["dense"].folder / "model"
    lines.append(
        f"obert-train run {_quote(dense / 'recipe.yaml')} --model "
        f"{_quote(prepared.model_source)} {data} {train} --output-dir DENSE"
    )
    for label in labels[1:]:
        recipe = stages[label].folder / "model" / "recipe.yaml"
        lines.append(
            f"obert-train run {_quote(recipe)} --model DENSE --teacher DENSE {data} {train} "
            f"--output-dir {label.upper()}"
        )
        if "shrunk_model" in stages[label].outputs:  # the structured stage's
            lines.append(
                f"obert-train shrink {label.upper()} --output-dir {label.upper()}-SHRUNK  "
                "# plain from_pretrained loads it"
            )
    seq = config.seq_len
    for label in labels:
        ckpt = "DENSE" if label == "dense" else label.upper()
        lines.append(
            f"obert-deploy export {ckpt} -o {label}.onnx --task {prepared.deploy_task} "
            f"--max-seq-length {seq}"
        )
        lines.append(f"obert-deploy quantize {label}.onnx -o {label}-int8.onnx")
        if prepared.dev_file is not None and config.onnx_eval:
            evaluation = stages.get(f"eval-{label}")
            dev = (  # a GLUE dev file as the eval stage read it (training's label ids)
                evaluation.path("dev_file")
                if evaluation is not None and "dev_file" in evaluation.outputs
                else prepared.dev_file
            )
            squad = [
                f"{flag} {value}"
                for flag, value in (
                    ("--doc-stride", config.data.doc_stride),
                    ("--max-query-length", config.data.max_query_length),
                )
                if value is not None and prepared.deploy_task == "question-answering"
            ]
            limit = config.data.max_eval_samples
            extra = [*squad, *([f"--max-eval-samples {limit}"] if limit is not None else [])]
            lines.append(
                f"obert-deploy evaluate {ckpt} {label}.onnx {label}-int8.onnx --task "
                f"{prepared.deploy_task} --data {_quote(dev)} --max-seq-length "
                f"{prepared.dev_tokens}" + "".join(f" {e}" for e in extra)
            )
    files = [f"{label}{suffix}.onnx" for label in labels for suffix in ("", "-int8")]
    for batch in config.bench_batch_sizes:
        lines.append(
            f"obert-deploy bench {' '.join(files)} --engine onnxruntime --batch-size {batch} "
            f"--max-seq-length {seq}"
        )
    lines.append(f"obert-deploy size {' '.join(files)} --reference dense.onnx  # gzip -9, here -6")
    return lines


def build_report(
    config: QuickstartConfig,
    prepared: Prepared,
    stages: Sequence[StageRecord],
    *,
    seconds: float,
    load_at_start: list[float] | None = None,
) -> dict[str, Any]:
    """The report's content (what ``report.json`` holds)."""
    by_name = {s.name: s for s in stages}
    labels = _labels(prepared, by_name)
    task = prepared.task
    models: dict[str, Any] = {}
    for label in labels:
        trained = by_name[label].outputs
        entry: dict[str, Any] = {
            "sparsity": trained.get("sparsity"),
            **({"atom_sparsity": trained["atom_sparsity"]} if "atom_sparsity" in trained else {}),
            "metric": trained.get("metric"),
            "pytorch": trained.get("metrics", {}),
            "curve": trained.get("curve", []),
            "pruning_steps": trained.get("pruning_steps", []),
            "train_seconds": trained.get("train_seconds"),
            "checkpoint": str(by_name[label].folder / "model"),
        }
        export = by_name.get(f"export-{label}")
        if export is not None:
            entry["export"] = {**export.outputs, "onnx": str(export.path("onnx"))}
        int8 = by_name.get(f"int8-{label}")
        if int8 is not None:
            entry["int8"] = {**int8.outputs, "onnx": str(int8.path("onnx"))}
        evaluation = by_name.get(f"eval-{label}")
        if evaluation is not None:
            entry["onnx_eval"] = evaluation.outputs
        if label == prepared.structured_label and prepared.structured_recipe is not None:
            entry.update(_structured_entry(by_name[label]))
        models[label] = entry
    bench = list(by_name["bench"].outputs.get("results", [])) if "bench" in by_name else []
    if "deepsparse" in by_name:
        bench += list(by_name["deepsparse"].outputs.get("results", []))
    sizes = by_name["size"].outputs.get("sizes", {}) if "size" in by_name else {}
    command = config.command or "obert quickstart"
    return {
        "command": command,
        "stage_commands": stage_commands(config, prepared, by_name),
        "config": config.to_dict(),
        "model": prepared.model_source,
        "data": prepared.data_description,
        "data_name": _data_name(config),
        "task": task.name,
        "metric": task.primary_metric,
        "train_examples": len(task.train_features),
        "dev_examples": len(getattr(task, "dev_features", []) or []),
        "max_seq_length": config.seq_len,
        "pruned_tensors": len(prepared.targets),
        "pruned_weights": prepared.pruned_weights,
        "recipes": {
            "dense": prepared.dense_recipe.to_yaml(),
            prepared.pruned_label: prepared.pruning_recipe.to_yaml(),
            **(
                {prepared.baseline_label: prepared.baseline_recipe.to_yaml()}
                if prepared.baseline_recipe is not None and prepared.baseline_label
                else {}
            ),
            **(
                {prepared.structured_label: prepared.structured_recipe.to_yaml()}
                if prepared.structured_recipe is not None
                else {}
            ),
        },
        "models": models,
        "latency": bench,
        "size": sizes,
        "stages": [
            {"name": s.name, "cached": s.cached, "seconds": s.seconds, "key": s.key} for s in stages
        ],
        "wall_seconds": seconds,
        "load_average_at_start": load_at_start,
        "machine": machine_info(),
        "notes": list(prepared.notes),
    }


def _structured_entry(record: StageRecord) -> dict[str, Any]:
    """The structured model's fractions of neurons and heads removed and its shrunk checkpoint."""
    shrink = dict(record.outputs.get("shrink") or {})
    if "error" in shrink:
        return {"kind": "structured", "shrunk": {"error": shrink["error"]}}
    structure = {"neurons": shrink.get("neurons_removed"), "heads": shrink.get("heads_removed")}
    return {
        "kind": "structured",
        "structure": structure,
        "shrunk": {
            "checkpoint": str(record.path("shrunk_model")),
            "loads_with": shrink.get("loads_with"),
            "intermediate_size": shrink.get("intermediate_size"),
            "num_attention_heads": shrink.get("num_attention_heads"),
            "heads": shrink.get("heads"),
            "parameters": shrink.get("parameters"),
            "max_output_difference": shrink.get("max_output_difference"),
        },
    }


def _latency(report: dict[str, Any], name: str, engine: str, batch: int) -> float | None:
    for row in report["latency"]:
        if (row["name"], row["engine"], row["batch_size"]) == (name, engine, batch):
            return float(row["latency_ms"]["p50"])
    return None


def _onnx_metric(report: dict[str, Any], label: str, name: str) -> float | None:
    evaluation = report["models"].get(label, {}).get("onnx_eval")
    if not evaluation:
        return None
    metric = report["metric"]
    value = evaluation["models"].get(name, {}).get("metrics", {}).get(metric)
    return None if value is None else float(value)


_ORT = "onnxruntime"
_ENGINE_NAMES = {"deepsparse": "DeepSparse", "openvino": "OpenVINO", _ORT: "ONNX Runtime"}
"""How the speed-up line names an engine."""


def _engine_order(engine: str) -> tuple[int, str]:
    return (0 if engine == _ORT else 1, engine)


def _speedup(report: dict[str, Any], name: str, engine: str, batch: int) -> float | None:
    """Dense fp32 p50 on ONNX Runtime / ``name``'s p50 on ``engine`` at ``batch``."""
    base = _latency(report, "dense", _ORT, batch)
    mine = _latency(report, name, engine, batch)
    return None if base is None or mine is None or mine <= 0 else base / mine


def _times(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}x"


def _best_speedup(
    report: dict[str, Any], engine: str, names: Sequence[str] | None = None
) -> tuple[float, str, int] | None:
    """The largest speed-up over dense fp32 ONNX Runtime on ``engine``: (x, model, batch)."""
    best: tuple[float, str, int] | None = None
    for row in report["latency"]:
        name, batch = str(row["name"]), int(row["batch_size"])
        if row["engine"] != engine or name == "dense" or (names and name not in names):
            continue
        value = _speedup(report, name, engine, batch)
        if value is not None and (best is None or value > best[0]):
            best = (value, name, batch)
    return best


def _structured_label(report: dict[str, Any]) -> str | None:
    """The structured stage's model (not ``--recipe``'s, whatever its label), or None."""
    found = [n for n, e in report["models"].items() if e.get("kind") == "structured"]
    return found[0] if found else None


def _structured_model(report: dict[str, Any]) -> dict[str, Any] | None:
    """The structured stage's model entry, or None."""
    label = _structured_label(report)
    return None if label is None else report["models"][label]


def _removed(entry: dict[str, Any]) -> str:
    """`` (75.0 % of FFN neurons and 50.0 % of heads removed)``, or nothing."""
    structure = entry.get("structure") or {}
    parts = [
        f"{_pct(structure[key], 1)} % of {what}"
        for key, what in (("neurons", "FFN neurons"), ("heads", "heads"))
        if structure.get(key) is not None
    ]
    return f" ({' and '.join(parts)} removed)" if parts else ""


def speedup_summary(report: dict[str, Any]) -> str:
    """The speed-up line(s) that open the summary.

    The best ONNX Runtime speed-up of any model over the dense fp32 model (which model, which
    batch size), the structured model's at every batch size, and, when DeepSparse ran, the
    pruned models' best there (over the same dense fp32 ONNX Runtime latency, and over dense
    on DeepSparse). Every speed-up compares p50 latencies of one run on one machine.
    """
    lines: list[str] = []
    best = _best_speedup(report, _ORT)
    if best is None:
        return "Speed-up: no ONNX Runtime latency of the dense model to compare with."
    value, name, batch = best
    lines.append(
        f"Speed-up: best on ONNX Runtime {value:.2f}x ({name}, batch {batch}) over dense fp32 "
        "on ONNX Runtime."
    )
    label = _structured_label(report)
    if label is not None:
        structured = report["models"][label]
        cells = [
            f"{_times(_speedup(report, label, _ORT, b))} at batch {b}"
            for b in sorted({int(r["batch_size"]) for r in report["latency"]})
            if _latency(report, label, _ORT, b) is not None
        ]
        if cells:
            lines.append(
                f"The structured model{'' if label == STRUCTURED_LABEL else f' {label}'}"
                f"{_removed(structured)} on ONNX Runtime, any CPU: " + ", ".join(cells) + "."
            )
    engines = {str(r["engine"]) for r in report["latency"]} - {_ORT}
    pruned = [
        n for n, e in report["models"].items() if n != "dense" and e.get("kind") != "structured"
    ]
    for engine in sorted(engines):
        found = _best_speedup(report, engine, pruned)
        if found is None:
            continue
        value, name, batch = found
        own = _latency(report, "dense", engine, batch)
        mine = _latency(report, name, engine, batch)
        shown = _ENGINE_NAMES.get(engine, engine)
        versus = f", {own / mine:.2f}x over dense on {shown}" if own is not None and mine else ""
        lines.append(
            f"On {shown}: {name} {value:.2f}x (batch {batch}) over dense fp32 on ONNX "
            f"Runtime{versus}."
        )
    if not engines:
        lines.append(
            "DeepSparse did not run (no environment at --deepsparse): ONNX Runtime multiplies "
            "the unstructured models' zeros like other numbers."
        )
    return " ".join(lines)


def summary_table(report: dict[str, Any]) -> str:
    """The summary: one row per model (fp32 and int8) with accuracy, latency and size."""
    metric = report["metric"]
    batches = sorted({int(r["batch_size"]) for r in report["latency"]})
    engines = sorted({str(r["engine"]) for r in report["latency"]}, key=_engine_order)
    ort = [b for b in batches if _latency(report, "dense", _ORT, b) is not None]
    head = [
        "model",
        "sparsity %",
        f"dev {_metric_head(metric)} (PyTorch)",
        f"dev {_metric_head(metric)} (ONNX)",
        *[f"{e} b{b} p50 ms" for e in engines for b in batches],
        *[f"speed-up b{b} (ORT)" for b in ort],
        "file MB",
        "gzip MB",
    ]
    rows: list[list[str]] = []
    for label, entry in report["models"].items():
        for name in (label, f"{label}-int8"):
            size = report["size"].get(name, {})
            rows.append(
                [
                    name,
                    _sparsity(entry),
                    _metric(metric, entry["pytorch"].get(metric)) if name == label else "",
                    _metric(metric, _onnx_metric(report, label, name)),
                    *[
                        _ms(_latency(report, name, engine, batch))
                        for engine in engines
                        for batch in batches
                    ],
                    *[_times(_speedup(report, name, _ORT, batch)) for batch in ort],
                    _mb(size.get("file_bytes")),
                    _mb(size.get("best_compressed_bytes")),
                ]
            )
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _curve_table(report: dict[str, Any]) -> str:
    metric = report["metric"]
    lines = [
        f"| method | point | weight sparsity % | dev {_metric_head(metric)} |",
        "|---|---|---:|---:|",
    ]
    dense = report["models"].get("dense", {}).get("pytorch", {}).get(metric)
    lines.append(f"| dense | fine-tuned | 0.0 | {_metric(metric, dense)} |")
    for label, entry in report["models"].items():
        curve = entry.get("curve", [])
        structured = entry.get("kind") == "structured"
        for index, point in enumerate(curve):
            where = "final model" if index == len(curve) - 1 else f"before step {index + 2}"
            if structured and index == len(curve) - 1:
                where = f"final model{_removed(entry)}"
            method = f"{label} (whole neurons, heads)" if structured else label
            lines.append(
                f"| {method} | {where} | {_pct(point['sparsity'], 1)} "
                f"| {_metric(metric, point['metric'])} |"
            )
    return "\n".join(lines)


def _latency_table(report: dict[str, Any]) -> str:
    lines = [
        "| model | engine | batch | seq | threads | p50 ms | p90 ms | items/s "
        "| speed-up vs dense |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["latency"]:
        dense = _latency(report, "dense", row["engine"], row["batch_size"])
        p50 = float(row["latency_ms"]["p50"])
        speedup = f"{dense / p50:.2f}x" if dense else "–"
        lines.append(
            f"| {row['name']} | {row['engine']} {row['engine_version']} | {row['batch_size']} | "
            f"{row['seq_len']} | {row['threads']} | {p50:.2f} | {row['latency_ms']['p90']:.2f} "
            f"| {row['items_per_s']:.1f} | {speedup} |"
        )
    return "\n".join(lines)


def _size_table(report: dict[str, Any]) -> str:
    lines = [
        "| model | weight sparsity % | file MB | gzip MB | sparse (bitmask) + gzip MB | "
        "smaller than dense fp32 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, size in report["size"].items():
        lines.append(
            f"| {name} | {_pct(size['weight_sparsity'], 1)} | {_mb(size['file_bytes'])} | "
            f"{_mb(size['gzip_bytes'])} | {_mb(size['bitmask_gzip_bytes'])} | "
            f"{size['compression_ratio']:.2f}x |"
        )
    return "\n".join(lines)


_EVERY_HEAD_KEPT = "every head is kept"
"""What :func:`obert_train.shrink_model` reports as ``heads`` when no head was removed."""


def _shrunk_lines(report: dict[str, Any]) -> list[str]:
    """Where the structured model's physically smaller checkpoint is, and what loads it."""
    entry = _structured_model(report)
    if entry is None:
        return []
    shrunk = entry.get("shrunk") or {}
    if "error" in shrunk:
        return ["", f"No smaller checkpoint of the structured model: {shrunk['error']}"]
    if not shrunk:
        return []
    sizes, params = shrunk["intermediate_size"], shrunk["parameters"]
    heads = shrunk.get("heads")
    count = shrunk.get("num_attention_heads") or {}
    if heads == "removed":
        attention = f"num_attention_heads {count.get('before')} -> {count.get('after')}"
    elif heads == _EVERY_HEAD_KEPT:
        attention = f"num_attention_heads {count.get('before')}, no head removed"
    else:
        attention = (
            "its removed heads stay as zeros in PyTorch (the config cannot say fewer heads; "
            "the ONNX export removes them)"
        )
    return [
        "",
        f"The structured model as a physically smaller checkpoint: `{shrunk['checkpoint']}` "
        f"(intermediate_size {sizes['before']} -> {sizes['after']}, {attention}; "
        f"{params['before']:,} -> {params['after']:,} parameters). Plain transformers loads it: "
        f"`{shrunk['loads_with']}.from_pretrained(path)`; its outputs match the trained "
        f"model's (largest difference {shrunk['max_output_difference']:.2g}, checked by the "
        "stage).",
    ]


def _machine_lines(report: dict[str, Any]) -> list[str]:
    machine = report["machine"]
    cpu = machine["cpu"]
    load = machine.get("load_average")
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    memory = machine.get("memory_bytes")
    return [
        f"- CPU: {cpu['brand']} ({cpu['arch']}), {cpu['available_cores']} of "
        f"{cpu['logical_cores']} logical cores usable; AVX2 {cpu['avx2']}, AVX-512 "
        f"{cpu['avx512']}, VNNI {cpu['vnni']}, AMX {cpu['amx']}",
        f"- CPU flags: {' '.join(machine['flags']) or 'unknown'}",
        f"- memory: {memory / 2**30:.1f} GiB" if memory else "- memory: unknown",
        f"- load average (1, 5, 15 min) at the start: {report.get('load_average_at_start')}, "
        f"when the report was written: {load} (other jobs on the machine slow every stage and "
        "make latencies noisy)",
        f"- platform: {machine['platform']}",
        f"- versions: {versions}",
    ]


def render_markdown(report: dict[str, Any]) -> str:
    """``report.md``."""
    metric = report["metric"]
    ran = [s for s in report["stages"] if not s["cached"]]
    lines = [
        "# obert quickstart report",
        "",
        f"- model: `{report['model']}`",
        f"- data: {report['data']}; task `{report['task']}`, {report['train_examples']} "
        f"training and {report['dev_examples']} dev examples, at most "
        f"{report['max_seq_length']} tokens",
        f"- pruned: {report['pruned_tensors']} tensors"
        + (f" ({report['pruned_weights']:,} weights)" if report.get("pruned_weights") else ""),
        f"- wall time: {report['wall_seconds']:.0f} s ({len(ran)} of {len(report['stages'])} "
        "stages ran, the others were reused)",
        *_failed_lines(report),
        "",
        "## Summary",
        "",
        speedup_summary(report),
        "",
        summary_table(report),
        "",
        f"Dev {metric} in percent; latency p50 in milliseconds (sequence length "
        f"{report['max_seq_length']}); speed-up: the dense fp32 model's p50 on ONNX Runtime "
        "(ORT) over the row's, same batch size; sizes in MB (gzip: the smaller of gzip -6 of "
        "the file and of its sparse bitmask form). ONNX Runtime multiplies zeros like any "
        "other number, so unstructured sparsity alone does not make it faster (int8 does); "
        "DeepSparse runs sparse kernels."
        + (
            " The structured model has whole FFN neurons and attention heads removed: its ONNX "
            "graph has smaller matrices, faster on any CPU."
            if _structured_model(report) is not None
            else ""
        ),
        *_shrunk_lines(report),
        "",
        "## Accuracy vs sparsity (one gradual run per method)",
        "",
        _curve_table(report),
        "",
        *(
            [
                "The structured model's sparsity is the share of zeros in its pruned weight "
                "matrices, all of them in whole removed neurons and heads; the plot shows the "
                "unstructured methods only.",
                "",
            ]
            if any(e.get("kind") == "structured" for e in report["models"].values())
            else []
        ),
        f"![accuracy vs sparsity]({ACCURACY_PLOT})",
        "",
        "## Latency",
        "",
        _latency_table(report),
        "",
        f"![latency]({LATENCY_PLOT})",
        "",
        "## Size",
        "",
        _size_table(report),
        "",
        f"![size]({SIZE_PLOT})",
        "",
        "## Machine",
        "",
        *_machine_lines(report),
        "",
        "## Stages",
        "",
        "| stage | this run | seconds |",
        "|---|---|---:|",
        *[
            f"| {s['name']} | {'reused' if s['cached'] else 'ran'} | {s['seconds']:.1f} |"
            for s in report["stages"]
        ],
        "",
        "Reused stages show the time of the run that computed them.",
        "",
        "## Reproduce",
        "",
        "```bash",
        report["command"],
        "```",
        "",
        "The same stages with the package command lines (DENSE, "
        + ", ".join(k.upper() for k in report["models"] if k != "dense")
        + ": output folders; the quickstart also evaluates the dev set after each pruning "
        "step's recovery):",
        "",
        "```bash",
        *report["stage_commands"],
        "```",
    ]
    if report["notes"]:
        lines += ["", "## Notes", "", *[f"- {note}" for note in report["notes"]]]
    return "\n".join(lines) + "\n"


#: Characters per line of the accuracy plot's title (9 pt on a 6.4-inch figure holds ~75).
_TITLE_WIDTH = 60


def _accuracy_title(report: dict[str, Any]) -> str:
    """The accuracy plot's title, wrapped so that no line is wider than the figure."""
    import textwrap

    what = f"{model_name(report['model'])} on {report['data_name']}"
    lines = textwrap.wrap(what, _TITLE_WIDTH, break_long_words=True)
    last = f"dev {report['metric']} vs sparsity ({report['train_examples']} training examples)"
    return "\n".join([*lines, *textwrap.wrap(last, _TITLE_WIDTH, break_long_words=True)])


def _accuracy_figure(report: dict[str, Any]) -> Any:
    """The accuracy plot as a laid-out matplotlib figure (the caller saves and closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = report["metric"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, entry in report["models"].items():
        curve = entry.get("curve", [])
        if not curve or entry.get("kind") == "structured":  # atoms, not weights: the tables
            continue
        xs = [100 * p["sparsity"] for p in curve]
        ys = [100 * p["metric"] for p in curve]
        ax.plot(xs, ys, marker="o", label=f"{label} (gradual + KD)")
    dense = report["models"].get("dense", {}).get("pytorch", {}).get(metric)
    if dense is not None:
        ax.axhline(100 * dense, color="grey", linestyle=":", label="dense")
    ax.set_xlabel("sparsity of the pruned weights (%), unstructured")
    ax.set_ylabel(f"dev {metric} (%)")
    ax.set_title(_accuracy_title(report), fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _plot_accuracy(report: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = _accuracy_figure(report)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_size(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["size"])
    files = [report["size"][n]["file_bytes"] / 1e6 for n in names]
    packed = [report["size"][n]["best_compressed_bytes"] / 1e6 for n in names]
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(names) + 1.4))
    ys = list(range(len(names)))[::-1]
    ax.barh([y + 0.2 for y in ys], files, height=0.4, label="file")
    ax.barh([y - 0.2 for y in ys], packed, height=0.4, label="compressed (best of gzip, bitmask)")
    for y, a, b in zip(ys, files, packed, strict=True):
        ax.text(a, y + 0.2, f" {a:.1f}", va="center", fontsize=7)
        ax.text(b, y - 0.2, f" {b:.1f}", va="center", fontsize=7)
    ax.set_yticks(ys, names, fontsize=8)
    ax.set_xlabel("MB")
    ax.set_title("model size", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_latency(report: dict[str, Any], path: Path) -> None:
    from obert_deploy import BenchResult, plot_results

    results = [BenchResult.from_dict(dict(row)) for row in report["latency"]]
    if results:
        plot_results(results, path, title="latency per model, engine and batch size")


REPORT_FILES = ("report.json", "report.md", ACCURACY_PLOT, LATENCY_PLOT, SIZE_PLOT)
"""The files the quickstart writes into ``--output-dir`` itself (besides ``stages/``)."""
_MD_TITLE = "# obert quickstart report"


def _ours(path: Path, report_json_is_ours: bool) -> bool:
    """Whether an existing report file was written by the quickstart (its known content)."""
    try:
        if path.name == "report.md":
            with path.open(encoding="utf-8", errors="replace") as handle:
                return handle.readline().rstrip("\n") == _MD_TITLE
        if path.name == "report.json":
            data = json.loads(path.read_text(encoding="utf-8"))
            return isinstance(data, dict) and "stage_commands" in data and "command" in data
    except (OSError, ValueError):
        return False
    return report_json_is_ours  # a plot: ours when the report next to it is


def foreign_report_files(folder: Path) -> list[str]:
    """The report file names in ``folder`` that the quickstart did not write (never overwritten).

    ``report.md`` is the quickstart's if it starts with its title, ``report.json`` if it holds
    the quickstart's keys, a plot if the ``report.json`` beside it is the quickstart's
    (``docs/quickstart.md``; the output-folder policy of ``docs/train.md``).
    """
    json_file = folder / "report.json"
    json_ours = json_file.is_file() and _ours(json_file, False)
    return [
        name
        for name in REPORT_FILES
        if (folder / name).exists()
        and (not (folder / name).is_file() or not _ours(folder / name, json_ours))
    ]


def _failed_lines(report: dict[str, Any]) -> list[str]:
    failed = report.get("failed_stage")
    if not failed:
        return []
    skipped = ", ".join(failed.get("not_run", [])) or "none"
    return [
        f"- **stage {failed['stage']} failed**: {failed['error']} (not run after it: "
        f"{skipped}); this report shows the stages that finished"
    ]


def write_report(
    folder: Path,
    config: QuickstartConfig,
    prepared: Prepared,
    stages: Sequence[StageRecord],
    *,
    seconds: float,
    load_at_start: list[float] | None = None,
    failed: Mapping[str, Any] | None = None,
) -> tuple[Path, Path, dict[str, Any]]:
    """Write ``report.json``, ``report.md`` and the plots into ``folder``.

    Args:
        folder: The quickstart's ``--output-dir``.
        config: The options.
        prepared: The checked inputs.
        stages: The finished stages.
        seconds: Wall time.
        load_at_start: The load average when the run began.
        failed: ``{"stage", "error", "not_run"}`` when a late stage failed: the report of what
            finished says which stage failed and why.

    Returns:
        The markdown and JSON paths and the report's content.
    """
    report = build_report(config, prepared, stages, seconds=seconds, load_at_start=load_at_start)
    if failed:
        report["failed_stage"] = dict(failed)
    folder.mkdir(parents=True, exist_ok=True)
    writers: list[tuple[str, Callable[[dict[str, Any], Path], None]]] = [
        (ACCURACY_PLOT, _plot_accuracy),
        (LATENCY_PLOT, _plot_latency),
        (SIZE_PLOT, _plot_size),
    ]
    for name, writer in writers:
        tmp = folder / f".{name}.tmp.png"
        writer(report, tmp)
        if tmp.exists():
            tmp.replace(folder / name)
    json_path, md_path = folder / "report.json", folder / "report.md"
    for path, text in (
        (json_path, json.dumps(report, indent=2, default=str) + "\n"),
        (md_path, render_markdown(report)),
    ):
        atomic_write_bytes(path, text.encode("utf-8"))
    return md_path, json_path, report
