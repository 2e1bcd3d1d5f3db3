"""DeepZero's forward parallelism in ZOTrainer: CGE coordinates split across processes by cost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import BertTokenizer, DataCollatorWithPadding

from obert_train import (
    ArgumentError,
    ModelError,
    ModifierSpec,
    OptionError,
    TrainingError,
    build_recipe,
)
from obert_train.hf.trainer import ObertTrainer
from obert_train.hf.zo import ZOSettings, ZOTrainer
from obert_train.hf.zo_pool import Job, available_cores, split_by_cost

from .test_zo_trainer import _args, _features, _model, _trainer


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    """The in-process run on one thread, as each worker process runs (bit-for-bit comparisons).

    An earlier test in the same pytest process may have left torch at more threads, which sums
    in another order.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _sparse(model: torch.nn.Module, sparsity: float = 0.95) -> dict[str, float]:
    return {
        n: sparsity
        for n, p in model.named_parameters()
        if p.dim() == 2 and (".encoder." in n or n.startswith("classifier"))
    }


def _cge_run(
    tokenizer: BertTokenizer,
    out: Path,
    workers: int,
    stages: Any = None,
    steps: int = 2,
    momentum: float = 0.0,
) -> tuple[ZOTrainer, dict[str, torch.Tensor]]:
    model = _model(tokenizer)
    zo = ZOSettings(
        mu=1e-3,
        seed=2,
        estimator="cge",
        gradient_sparsity=_sparse(model),
        stages=stages,
        workers=workers,
        momentum=momentum,
    )
    trainer = _trainer(tokenizer, out, model, zo=zo, max_steps=steps, learning_rate=0.5)
    trainer.train()
    return trainer, {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.skipif(available_cores() < 2, reason="two workers need two cores")
@pytest.mark.parametrize("stages", [None, ()], ids=["feature-reuse", "full-reruns"])
def test_two_workers_give_the_one_worker_estimate_bit_for_bit(
    tokenizer: BertTokenizer, tmp_path: Path, stages: Any
) -> None:
    """Same θ, same inputs, one thread per process: the same losses, the same SGD steps."""
    one, weights_one = _cge_run(tokenizer, tmp_path / "one", 1, stages)
    two, weights_two = _cge_run(tokenizer, tmp_path / "two", 2, stages)
    for name, value in weights_one.items():
        assert torch.equal(value, weights_two[name]), name
    assert one.zo_losses == two.zo_losses
    recorded = 1 if stages is None else 0  # the worker's own forward at θ (feature reuse)
    assert two.zo_queries == [q + recorded for q in one.zo_queries]
    assert one.zo_queries[0] > 100
    assert two.pool is None  # stopped when train() returned
    assert one.zo_losses[-1] != one.zo_losses[0]  # the steps moved the weights


@pytest.mark.skipif(available_cores() < 2, reason="two workers need two cores")
def test_two_workers_with_momentum_give_the_one_worker_steps_bit_for_bit(
    tokenizer: BertTokenizer, tmp_path: Path
) -> None:
    """The estimate is formed in the trainer's process, so the momentum step is the same too."""
    one, weights_one = _cge_run(tokenizer, tmp_path / "one", 1, steps=3, momentum=0.9)
    two, weights_two = _cge_run(tokenizer, tmp_path / "two", 2, steps=3, momentum=0.9)
    for name, value in weights_one.items():
        assert torch.equal(value, weights_two[name]), name
    assert one.zo_losses == two.zo_losses
    assert one.zo_grad_norms == two.zo_grad_norms


@pytest.mark.skipif(available_cores() < 2, reason="two workers need two cores")
def test_a_worker_whose_coordinates_all_rerun_everything_records_nothing(
    tokenizer: BertTokenizer, tmp_path: Path
) -> None:
    """Only embedding coordinates (stage 0) move: no process records θ beyond the base loss."""
    name = "bert.embeddings.word_embeddings.weight"
    runs = []
    for workers in (1, 2):
        model = _model(tokenizer)
        for n, p in model.named_parameters():
            p.requires_grad_(n == name)
        keep = torch.zeros(model.get_parameter(name).numel(), dtype=torch.bool)
        keep[torch.randperm(keep.numel(), generator=torch.Generator().manual_seed(0))[:40]] = True
        zo = ZOSettings(estimator="cge", workers=workers)
        trainer = _trainer(
            tokenizer, tmp_path / str(workers), model, zo=zo, max_steps=1, masks={name: keep}
        )
        assert trainer.reuse is not None and trainer.reuse.stage_of(model.get_parameter(name)) == 0
        trainer.train()
        runs.append((trainer.zo_queries, model.get_parameter(name).detach().clone()))
    (one_queries, one_weights), (two_queries, two_weights) = runs
    assert one_queries == [40 + 1]  # 40 coordinates and the base loss
    assert two_queries == one_queries  # the worker's share is stage 0: no forward at θ
    assert torch.equal(one_weights, two_weights)


@pytest.mark.skipif(available_cores() < 2, reason="two workers need two cores")
def test_a_failing_step_stops_the_workers_and_names_the_loss(
    tokenizer: BertTokenizer, tmp_path: Path
) -> None:
    model = _model(tokenizer)
    zo = ZOSettings(estimator="cge", gradient_sparsity=_sparse(model), workers=2)
    trainer = _trainer(tokenizer, tmp_path, model, zo=zo, max_steps=3)
    started: list[Any] = []
    original = trainer._cge_parallel

    def spy(*args: Any) -> float:
        result = original(*args)
        assert trainer.pool is not None
        started.extend(trainer.pool.processes)
        with torch.no_grad():  # the next step's loss is NaN
            model.classifier.bias.fill_(float("nan"))
        return float(result)

    trainer._cge_parallel = spy
    with pytest.raises(TrainingError, match=r"non-finite ZO loss \(nan\) at θ of optimizer step 1"):
        trainer.train()
    assert trainer.pool is None
    assert started
    assert all(not p.is_alive() for p in started)


def test_a_failed_worker_start_stops_the_workers_already_started(
    tokenizer: BertTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second fork fails: the first worker is stopped, the error is the fork's."""
    import multiprocessing

    from obert_train.hf import zo_pool

    real = multiprocessing.get_context("fork")
    started: list[Any] = []

    def no_fork() -> None:
        raise OSError("fork: out of memory")

    class Context:
        Pipe = staticmethod(real.Pipe)

        @staticmethod
        def Process(*args: Any, **kwargs: Any) -> Any:
            process = real.Process(*args, **kwargs)
            if started:
                process.start = no_fork
            else:
                started.append(process)
            return process

    monkeypatch.setattr(zo_pool.multiprocessing, "get_context", lambda method: Context)
    with pytest.raises(OSError, match="fork: out of memory"):
        zo_pool.WorkerPool(_model(tokenizer), 2, [])
    assert len(started) == 1
    started[0].join(timeout=10)
    assert not started[0].is_alive()


def test_more_workers_than_cores_or_with_spsa_is_refused() -> None:
    cores = available_cores()
    with pytest.raises(OptionError, match=rf"workers={cores + 1} exceeds the {cores} CPU cores"):
        ZOSettings(estimator="cge", workers=cores + 1)
    with pytest.raises(OptionError, match="workers=0 must be an integer >= 1"):
        ZOSettings(estimator="cge", workers=0)
    if cores >= 2:
        with pytest.raises(OptionError, match="workers=2 splits the coordinates of"):
            ZOSettings(estimator="spsa", workers=2)


def test_a_custom_loss_cannot_run_in_the_workers(tokenizer: BertTokenizer, tmp_path: Path) -> None:
    class Custom(ZOTrainer):
        def compute_loss(self, *args: Any, **kwargs: Any) -> Any:
            return super().compute_loss(*args, **kwargs)

    if available_cores() < 2:
        pytest.skip("two workers need two cores")
    with pytest.raises(OptionError, match="compute_loss override"):
        Custom(
            model=_model(tokenizer),
            args=_args(tmp_path),
            train_dataset=_features(tokenizer),
            data_collator=DataCollatorWithPadding(tokenizer),
            zo=ZOSettings(estimator="cge", workers=2),
        )


def test_bad_losses_and_masks_are_named(tokenizer: BertTokenizer, tmp_path: Path) -> None:
    class Vector(ZOTrainer):
        def compute_loss(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
            return torch.ones(3)

    vector = Vector(
        model=_model(tokenizer),
        args=_args(tmp_path, max_steps=1),
        train_dataset=_features(tokenizer),
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    with pytest.raises(TrainingError, match=r"is not a scalar \(got \(3,\)\)"):
        vector.train()
    with pytest.raises(ArgumentError, match="recipe must be a Recipe, got str"):
        ZOTrainer(model=_model(tokenizer), args=_args(tmp_path), recipe="minilm-sst2-zo-sparse")  # type: ignore[arg-type]
    model = _model(tokenizer)
    name = "bert.encoder.layer.0.output.dense.weight"
    empty = torch.zeros_like(model.get_parameter(name), dtype=torch.bool)
    with pytest.raises(ModelError, match=rf"masks\['{name}'\] keeps no coordinate"):
        _trainer(tokenizer, tmp_path, model, masks={name: empty})
    frozen = _model(tokenizer)
    for n, p in frozen.named_parameters():
        p.requires_grad_(n == "classifier.weight")
    cge = ZOSettings(estimator="cge")
    with pytest.raises(TrainingError, match="ZO step 0: no coordinate can move"):
        _trainer(tokenizer, tmp_path, frozen, zo=cge, max_steps=1).train()


def test_zo_with_a_distilling_recipe_uses_obert_trainers_loss(
    tokenizer: BertTokenizer, tmp_path: Path
) -> None:
    recipe = build_recipe(
        [
            ModifierSpec.epoch_range(1),
            ModifierSpec.distillation(hardness=0.7, temperature=2.0),
            ModifierSpec("ZerothOrderModifier", {}),
        ]
    )
    student, teacher = _model(tokenizer), _model(tokenizer)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.05)
    common: dict[str, Any] = {
        "model": student,
        "args": _args(tmp_path, max_steps=2),
        "train_dataset": _features(tokenizer),
        "data_collator": DataCollatorWithPadding(tokenizer),
        "recipe": recipe,
        "teacher": teacher,
    }
    zo = ZOTrainer(**common)
    backprop = ObertTrainer(**common)
    batch = DataCollatorWithPadding(tokenizer)(_features(tokenizer))
    student.eval()
    with torch.no_grad():
        ours, theirs = zo.compute_loss(student, batch), backprop.compute_loss(student, batch)
        task = student(**batch).loss
    assert torch.equal(ours, theirs)
    assert not torch.equal(ours, task)  # the KD term is in it
    with pytest.raises(TrainingError, match="no teacher was given"):
        ZOTrainer(**{**common, "teacher": None})
    zo.train()
    assert len(zo.zo_losses) == 2


@given(
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=6),
    costs=st.lists(st.integers(1, 7), min_size=6, max_size=6),
    shares=st.integers(1, 4),
)
@settings(max_examples=60, deadline=None)
def test_split_by_cost_is_contiguous_complete_and_balanced(
    sizes: list[int], costs: list[int], shares: int
) -> None:
    jobs, offset = [], 0
    for k, n in enumerate(sizes):
        jobs.append(Job(f"p{k}", torch.arange(offset, offset + n), k))
        offset += n
    cost = costs[: len(jobs)]
    parts = split_by_cost(jobs, cost, shares)
    assert len(parts) == shares
    flat = [int(i) for part in parts for job in part for i in job.index]
    assert flat == list(range(offset))  # every coordinate once, in order
    per = {job.name: c for job, c in zip(jobs, cost, strict=True)}
    loads = [sum(per[j.name] * j.index.numel() for j in part) for part in parts]
    total = sum(loads)
    for load in loads:  # each share is within one coordinate's cost of the fair share
        assert abs(load - total / shares) <= max(cost) + 1e-9
