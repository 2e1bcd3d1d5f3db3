"""Load transformers-4 checkpoints whose ``config.pruned_heads`` heads are physically absent.

transformers 5 dropped ``PreTrainedModel.prune_heads`` and ignores ``config.pruned_heads``: it
builds every layer with all heads and re-initialises the smaller attention weights.
:func:`from_pretrained_with_pruned_heads` loads such a checkpoint anyway: it cuts the listed
heads out of the freshly built model (:func:`~obert_deploy.remove_heads`) and then loads the real
weights from the checkpoint files (:func:`restore_pruned_heads`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import CheckpointError, ObertDeployError
from ._shrink import config_pruned_heads, normalise_pruned_heads, remove_heads

if TYPE_CHECKING:
    import torch

__all__ = [
    "checkpoint_pruned_heads",
    "from_pretrained_with_pruned_heads",
    "restore_pruned_heads",
]

_LOG = logging.getLogger(__name__)


def checkpoint_pruned_heads(source: str) -> dict[int, list[int]]:
    """``pruned_heads`` of the checkpoint's config.json (layer -> heads), or ``{}``."""
    config_file = Path(source) / "config.json"
    if config_file.is_file():
        try:
            data = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return normalise_pruned_heads(data.get("pruned_heads"))
    try:
        from transformers import AutoConfig

        return config_pruned_heads(AutoConfig.from_pretrained(source))
    except Exception:  # the model loader reports unreadable configs itself
        return {}


def _weight_files(source: str) -> list[str]:
    """Local paths of the checkpoint's weight files (resolving sharded indexes)."""
    from transformers.utils.hub import cached_file

    def resolve(name: str) -> str | None:
        local = Path(source) / name
        if local.is_file():
            return str(local)
        try:
            found = cached_file(source, name, _raise_exceptions_for_missing_entries=False)
        except Exception:
            return None
        return str(found) if found else None

    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = resolve(index_name)
        if index is not None:
            weight_map = json.loads(Path(index).read_text(encoding="utf-8"))["weight_map"]
            shards = sorted(set(weight_map.values()))
            return [path for path in (resolve(s) for s in shards) if path is not None]
    for name in ("model.safetensors", "pytorch_model.bin"):
        path = resolve(name)
        if path is not None:
            return [path]
    return []


def _read_tensors(source: str, names: set[str], prefix: str) -> dict[str, torch.Tensor]:
    """Read the checkpoint tensors for model parameter ``names`` (with/without ``prefix.``)."""
    import torch

    def candidates(name: str) -> list[str]:
        out = [name]
        if prefix and name.startswith(prefix + "."):
            out.append(name[len(prefix) + 1 :])
        if prefix:
            out.append(f"{prefix}.{name}")
        return out

    found: dict[str, torch.Tensor] = {}
    for path in _weight_files(source):
        if path.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(path, framework="pt") as handle:
                keys = set(handle.keys())
                for name in names - set(found):
                    key = next((k for k in candidates(name) if k in keys), None)
                    if key is not None:
                        found[name] = handle.get_tensor(key)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            for name in names - set(found):
                key = next((k for k in candidates(name) if k in state), None)
                if key is not None:
                    found[name] = state[key]
    return found


def restore_pruned_heads(
    model: torch.nn.Module,
    source: str,
    pruned_heads: Mapping[int, Sequence[int]],
    mismatched: Sequence[str],
) -> None:
    """Finish loading a checkpoint whose ``config.pruned_heads`` heads are physically absent.

    transformers 5 builds every layer with all heads and (with ``ignore_mismatched_sizes``)
    re-initialises the smaller query/key/value/output weights. This removes the listed heads
    from the freshly built model (original numbering) and then loads those weights from the
    checkpoint files.

    Args:
        model: The model as ``from_pretrained(..., ignore_mismatched_sizes=True)`` returned it.
        source: The checkpoint directory (or Hub id in the local cache).
        pruned_heads: Layer -> heads removed, from the checkpoint's config.
        mismatched: Names of the parameters transformers reported as mismatched.

    Raises:
        CheckpointError: A mismatched weight is not explained by the pruned heads, or cannot
            be read from the checkpoint.
    """
    import torch

    try:
        remove_heads(model, pruned_heads)
    except ObertDeployError as exc:
        raise CheckpointError(
            f"checkpoint {source!r} lists pruned_heads {dict(pruned_heads)} in its config, "
            f"which do not fit the model: {exc}"
        ) from exc
    names = set(mismatched)
    tensors = _read_tensors(source, names, str(getattr(model, "base_model_prefix", "")))
    params = dict(model.named_parameters())
    bad = []
    for name in sorted(names):
        tensor, param = tensors.get(name), params.get(name)
        if tensor is None or param is None or tuple(tensor.shape) != tuple(param.shape):
            bad.append(
                f"{name} (checkpoint {None if tensor is None else list(tensor.shape)}, model "
                f"{None if param is None else list(param.shape)})"
            )
            continue
        with torch.no_grad():
            param.copy_(tensor.to(param.dtype))
    if bad:
        raise CheckpointError(
            f"checkpoint {source!r}: weights whose shapes do not match the model even after "
            f"removing config.pruned_heads {dict(pruned_heads)}: {'; '.join(bad[:4])}"
            f"{' ...' if len(bad) > 4 else ''}; the checkpoint does not fit its config.json"
        )


class _DropLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


def from_pretrained_with_pruned_heads(
    auto_class: Any, source: str, **kwargs: Any
) -> tuple[Any, dict[str, Any]]:
    """Load like ``from_pretrained``, also when ``config.pruned_heads`` heads are absent.

    Without ``pruned_heads`` this is exactly ``auto_class.from_pretrained(source,
    output_loading_info=True, **kwargs)``. With them, the smaller attention weights are loaded
    with ``ignore_mismatched_sizes`` (transformers' report of those expected mismatches is
    silenced), and :func:`restore_pruned_heads` cuts the heads out and loads the real weights;
    the returned loading info then lists no mismatched keys.

    Raises:
        CheckpointError: From :func:`restore_pruned_heads`.
    """
    pruned = checkpoint_pruned_heads(source)
    if not pruned:
        model, info = auto_class.from_pretrained(source, output_loading_info=True, **kwargs)
        return model, dict(info)
    # transformers logs its load report (a table of the expected "MISMATCH, reinit" rows) as
    # a warning of this logger; missing keys are still reported by load_checkpoint itself.
    report_logger = logging.getLogger("transformers.modeling_utils")
    drop_report = _DropLoadReport()
    report_logger.addFilter(drop_report)
    try:
        model, info = auto_class.from_pretrained(
            source, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
        )
    finally:
        report_logger.removeFilter(drop_report)
    info = dict(info)
    mismatched = [str(item[0]) for item in info.get("mismatched_keys", ())]
    restore_pruned_heads(model, source, pruned, mismatched)
    info["mismatched_keys"] = []
    _LOG.info("%s: heads %s of config.pruned_heads are physically absent", source, pruned)
    return model, info
