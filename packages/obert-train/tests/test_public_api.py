from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import itertools

from typer.testing import CliRunner

import obert_train
from obert_train.cli.app import app, main

# What a user of the package needs, and nothing else (helpers stay in their modules).
PUBLIC = {
    # pruning lifecycle and methods
    "METHODS", "PruningMethod", "MethodSettings", "StepContext", "MaskState", "register_method",
    "create_method", "ObertPruning", "ObertSettings", "MagnitudePruning", "MovementPruning",
    "StructuredPruning", "StructuredSettings",
    "ConstantPruning", "oneshot_prune", "PruneResult", "BERT_ENCODER_PATTERNS",
    "resolve_target_params",
    # gradual pruning in Hugging Face training
    "ObertPruningCallback", "ObertTrainer", "run_recipe", "RunOptions", "RunResult",
    "distillation_loss", "recipe_lr_scheduler", "Recipe", "load_recipe", "steps_per_epoch",
    "ModifierSpec", "build_recipe",
    "method_for_tag",
    # sparse zeroth-order (MeZO-style) fine-tuning
    "ZOTrainer", "ZOSettings", "zo_grasp_sparsities",
    # LPViT's RxC block pruning and the latency table of block allocations (issue 19)
    "LPViTPruning", "LPViTSettings", "lpvit_loss", "load_latency_table",
    # Fisher machinery a caller may drive itself
    "GradientSampler",
    # tasks and checkpoints
    "Task", "ClassificationTask", "SquadTask", "MaskedLMTask", "load_task", "DataOptions",
    "read_glue_tsv", "read_squad_json", "read_raw_text",
    "save_checkpoint", "sparsity_report", "check_output_dir",
    # models and command-line building blocks (obert quickstart reuses them)
    "check_model_source", "load_tokenizer", "load_model", "with_data_options", "parse_sets",
    "VocabularyGroup", "version_callback",
    "check_finite_weights", "check_model_fits_task", "check_tokens_known", "distillable_outputs",
    # model operations
    "drop_layers", "shrink_model", "save_shrunk", "check_same_outputs",
    # errors
    "ObertTrainError", "ArgumentError", "DataError", "TargetError", "RecipeError", "MemoryPlanError",
    "MissingDependencyError", "ResumeError", "TrainingError", "ModelError", "OptionError",
    "OutputDirError",
    "__version__",
}  # fmt: skip

# Helpers and removed names that must not be part of the top-level API.
NOT_PUBLIC = {
    "format_bytes", "parse_memory", "parse_nm", "nm_pattern", "available_bytes",
    "default_budget_bytes", "grad_batching_bytes",
    "gram_precision", "group_peak_bytes", "fisher_bytes", "atomic_write_text",
    "atomic_directory", "select_masks", "apply_obs_update", "obs_updated", "obert_scores",
    "build_inverse_fishers", "current_masks", "shard_by_size", "DistContext", "LossFn",
    "OneShotConfig", "finetune", "FinetuneResult", "to_device", "convert_rows", "plan_memory",
    "MemoryPlan", "TASK_NAMES",
}  # fmt: skip

# Module-level data: documented by the string literal after its assignment.
DATA_MODULES = {
    "METHODS": "obert_train.pruning.registry",
    "BERT_ENCODER_PATTERNS": "obert_train.pruning.targets",
}


def test_all_names_exist_once() -> None:  # the order is checked by ruff (RUF022)
    assert len(set(obert_train.__all__)) == len(obert_train.__all__)
    for name in obert_train.__all__:
        assert hasattr(obert_train, name), name


def test_the_exports_are_what_users_need() -> None:
    exported = set(obert_train.__all__)
    assert exported == PUBLIC, (sorted(exported - PUBLIC), sorted(PUBLIC - exported))
    assert not exported & NOT_PUBLIC


def _attribute_docstring(module: str, name: str) -> str | None:
    source = inspect.getsource(importlib.import_module(module))
    body = ast.parse(source).body
    for node, after in itertools.pairwise(body):
        targets = (
            [node.target]
            if isinstance(node, ast.AnnAssign)
            else node.targets
            if isinstance(node, ast.Assign)
            else []
        )
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
                return str(after.value.value)
            return None
    raise AssertionError(f"{name} is not assigned in {module}")


def test_every_public_name_has_a_docstring() -> None:
    assert (obert_train.__doc__ or "").strip()
    for name in obert_train.__all__:
        obj = getattr(obert_train, name)
        if name == "__version__":
            assert isinstance(obj, str)
            continue
        if name in DATA_MODULES:
            assert (_attribute_docstring(DATA_MODULES[name], name) or "").strip(), name
            continue
        assert inspect.isclass(obj) or inspect.isfunction(obj), f"add {name} to DATA_MODULES"
        doc = (obj.__doc__ or "").strip()
        assert doc, name
        # dataclasses without a docstring get their signature as __doc__
        assert not (dataclasses.is_dataclass(obj) and doc.startswith(f"{name}(")), name
        if inspect.isclass(obj):
            for attr, value in vars(obj).items():
                func = value.fget if isinstance(value, property) else value
                func = getattr(func, "__func__", func)
                if attr.startswith("_") or not inspect.isfunction(func):
                    continue
                assert (func.__doc__ or "").strip(), f"{name}.{attr}"


def test_cli_help_lists_the_commands_and_options() -> None:
    env = {"COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"}
    top = CliRunner().invoke(app, ["--help"], env=env)
    assert top.exit_code == 0
    for command in ("run", "oneshot", "drop-layers", "recipe", "methods"):
        assert command in top.output
    assert "finetune" not in top.output
    result = CliRunner().invoke(app, ["oneshot", "--help"], env=env)
    assert result.exit_code == 0
    for option in (
        "--sparsity", "--method", "--recipe", "--set", "--num-grads", "--grad-batch-size",
        "--fisher-block-size", "--block-size", "--damp", "--mask-type", "--num-recomputations",
        "--global", "--layer", "--max-memory", "--target", "--overwrite", "--eval",
    ):  # fmt: skip
        assert option in result.output, option
    assert callable(main)  # the console-script entry point
