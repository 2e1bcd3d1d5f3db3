"""DeepZero's forward parallelism: the CGE coordinates of a step split across worker processes.

A coordinate-wise estimate (arXiv 2310.02025, §4; docs/math.md §9, (Z-2)) costs one forward per
coordinate; with feature reuse (:mod:`obert_train.hf.feature_reuse`) a coordinate of stage ``k``
of ``S`` stages reruns only the ``S − k`` stages from its own on. The coordinates of one step are
cut into ``W`` contiguous shares of equal total cost (``S − k`` forwards each with reuse, one
full forward each without, :func:`split_by_cost`); the trainer's process evaluates the first
share and ``W − 1`` persistent worker processes the others, all at the same ``θ``.

Every process runs the same code on the same inputs (:func:`evaluate_coordinates`): perturb
``θ_j`` to the representable ``fl(θ_j + μ)``, evaluate the loss, restore ``θ_j`` by assignment.
The workers are forked once (the model copied on write; no re-import, no pickled model) and
live until :meth:`WorkerPool.close`; at each step the trainer copies its weights and buffers
into shared memory and every worker copies them into its own model before it starts, so
pruning steps, weight decay and the SGD update of the last step all reach the workers. The
losses come back as float64 and the estimate ``(l_j − l(θ)) / h_j`` is formed in the trainer's
process, so with the same number of threads per process the estimate equals the one-process
estimate bit for bit.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from typing import Any

import torch

from obert_train.errors import OptionError, TrainingError
from obert_train.hf.distillation import distillation_loss
from obert_train.hf.feature_reuse import FeatureReuse

__all__ = [
    "Job",
    "KDLoss",
    "WorkerPool",
    "available_cores",
    "check_workers",
    "evaluate_coordinates",
    "loss_of_outputs",
    "one_thread",
    "split_by_cost",
    "zo_objective",
]


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` elsewhere)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # pragma: no cover - non-Linux


def check_workers(workers: int, where: str) -> int:
    """``workers`` if it is at most the cores available, else an :class:`OptionError`."""
    cores = available_cores()
    if workers > cores:
        raise OptionError(
            f"{where}: workers={workers} exceeds the {cores} CPU cores this process may use; "
            f"pass workers <= {cores} (processes beyond the cores only slow the forwards down)"
        )
    return workers


@dataclass(frozen=True)
class KDLoss:
    """The distillation part of the ZO objective (the recipe's ``!DistillationModifier``)."""

    hardness: float
    temperature: float
    output_keys: tuple[str, ...]


def zo_objective(
    model: torch.nn.Module,
    inputs: Mapping[str, Any],
    kd: KDLoss | None = None,
    teacher_outputs: Mapping[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The loss a ZO step estimates: the task loss, or ObertTrainer's KD mix.

    ``(1 − h)·task + h·KD`` by :func:`~obert_train.hf.distillation.distillation_loss`, the
    teacher's outputs given (computed once per step: they do not depend on ``θ``).

    Raises:
        TrainingError: the model returned no loss (no labels) and there is no KD.
    """
    return loss_of_outputs(model(**inputs), inputs, kd, teacher_outputs)


def loss_of_outputs(
    outputs: Any,
    inputs: Mapping[str, Any],
    kd: KDLoss | None = None,
    teacher_outputs: Mapping[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """:func:`zo_objective` of the model's outputs (the task loss, or the KD mix)."""
    task_loss = outputs.get("loss") if isinstance(outputs, dict) else outputs.loss
    if kd is None or teacher_outputs is None:
        if task_loss is None:
            raise TrainingError(
                f"the model returned no loss; the batches need labels (keys: {sorted(inputs)})"
            )
        return task_loss  # type: ignore[no-any-return]
    loss, _ = distillation_loss(
        outputs,
        teacher_outputs,
        task_loss=task_loss,
        hardness=kd.hardness,
        temperature=kd.temperature,
        output_keys=list(kd.output_keys),
    )
    return loss


@dataclass(frozen=True)
class Job:
    """Coordinates of one parameter to estimate: flat indices and the first stage to rerun."""

    name: str
    index: torch.Tensor
    stage: int


def split_by_cost(jobs: Sequence[Job], costs: Sequence[float], shares: int) -> list[list[Job]]:
    """Cut the coordinates of ``jobs`` (in order) into ``shares`` contiguous parts of equal cost.

    Args:
        jobs: The coordinates of a step, in model order.
        costs: The cost of one coordinate of each job (forwards of the stages it reruns).
        shares: The number of parts (workers).

    Returns:
        ``shares`` lists of jobs (a job may be cut between two parts; a part may be empty);
        part ``w`` holds the coordinates whose cumulative cost lies in ``[w·C/W, (w+1)·C/W)``.
    """
    total = sum(float(c) * int(j.index.numel()) for j, c in zip(jobs, costs, strict=True))
    parts: list[list[Job]] = [[] for _ in range(shares)]
    done = 0.0
    for job, cost in zip(jobs, costs, strict=True):
        n = int(job.index.numel())
        if n == 0:
            continue
        at = done + torch.arange(n, dtype=torch.float64) * float(cost)
        owner = (at * shares / total).floor().clamp(max=shares - 1).to(torch.int64)
        values, counts = torch.unique_consecutive(owner, return_counts=True)
        start = 0
        for w, c in zip(values.tolist(), counts.tolist(), strict=True):
            parts[w].append(Job(job.name, job.index[start : start + c], job.stage))
            start += c
        done += n * float(cost)
    return parts


def evaluate_coordinates(
    params: Mapping[str, torch.nn.Parameter],
    jobs: Sequence[Job],
    mu: float,
    loss_of: Callable[[str], float],
    reuse: FeatureReuse | None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(l(θ + h_j e_j), h_j)`` for every coordinate of ``jobs``, float64, θ restored exactly.

    ``h_j = fl(θ_j + μ) − θ_j``, the step the weight's dtype represents.

    Raises:
        TrainingError: ``μ`` does not change a weight (``h_j = 0``), or the loss fails.
    """
    out = []
    for job in jobs:
        flat = params[job.name].data.view(-1)
        losses = torch.empty(job.index.numel(), dtype=torch.float64)
        steps = torch.empty(job.index.numel(), dtype=torch.float64)
        with reuse.replay(job.stage) if reuse is not None else nullcontext():
            for t, j in enumerate(job.index.tolist()):
                old = flat[j].clone()
                flat[j] = old + mu
                h = float(flat[j]) - float(old)
                where = f"θ + μ·e_{j} of {job.name}"
                if h == 0.0:
                    flat[j] = old
                    raise TrainingError(
                        f"{where}: μ = {mu:g} does not change the weight {float(old):g} in "
                        f"{flat.dtype}; use float32 weights or a larger mu"
                    )
                try:
                    losses[t] = loss_of(where)
                finally:
                    flat[j] = old
                steps[t] = h
        out.append((losses, steps))
    return out


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch runs one intra-op thread inside the block (one process per core)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class WorkerPool:
    """``count`` forked processes, each with its own copy of ``model``, evaluating CGE shares.

    Args:
        model: The trained model (on the CPU); forked as it is now.
        count: Worker processes (the trainer's process is one more).
        stages: Feature-reuse stage names (empty: every coordinate reruns the whole model).

    Raises:
        OptionError: the model is not on the CPU (forked processes cannot share a GPU context).
    """

    def __init__(self, model: torch.nn.Module, count: int, stages: Sequence[str]) -> None:
        devices = {p.device.type for p in model.parameters()}
        if devices - {"cpu"}:
            raise OptionError(
                f"ZO workers > 1 parallelise CPU forwards across processes; the model is on "
                f"{sorted(devices)}: use workers=1 on an accelerator"
            )
        self.snapshot = {
            k: v.detach().clone().share_memory_() for k, v in model.state_dict().items()
        }
        ctx = multiprocessing.get_context("fork")
        self.conns: list[Any] = []
        self.processes: list[Any] = []
        parent = os.getpid()
        self._pending = False
        try:
            for _ in range(count):
                mine, theirs = ctx.Pipe()
                process = ctx.Process(
                    target=_serve,
                    args=(theirs, model, self.snapshot, list(stages), parent),
                    daemon=True,
                )
                try:
                    process.start()
                except BaseException:
                    mine.close()
                    raise
                finally:
                    theirs.close()
                self.conns.append(mine)
                self.processes.append(process)
        except BaseException:
            self.close()  # the workers started so far do not outlive a failed start
            raise

    def submit(
        self,
        model: torch.nn.Module,
        inputs: Mapping[str, Any],
        objective: tuple[KDLoss | None, Mapping[str, torch.Tensor] | None],
        mu: float,
        shares: Sequence[Sequence[Job]],
    ) -> None:
        """Copy ``model``'s state into shared memory and send each worker its share."""
        with torch.no_grad():
            for key, value in model.state_dict().items():
                self.snapshot[key].copy_(value)
        cpu = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        for conn, share in zip(self.conns, shares, strict=True):
            conn.send_bytes(pickle.dumps(("step", cpu, objective, mu, list(share))))
        self._pending = True

    def collect(self) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        """Each worker's ``(losses, steps)`` per job of its share, in worker order.

        Raises:
            TrainingError: a worker's loss failed (its message), or a worker died.
        """
        results: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
        errors: list[str] = []
        for w, (conn, process) in enumerate(zip(self.conns, self.processes, strict=True)):
            try:
                kind, payload = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):
                process.join(timeout=1)
                errors.append(
                    f"ZO worker {w + 1} (pid {process.pid}) died (exit code {process.exitcode})"
                )
                continue
            if kind == "ok":
                results.append(payload)
            else:
                errors.append(str(payload))
        self._pending = False
        if errors:
            raise TrainingError(errors[0])
        return results

    def close(self) -> None:
        """Stop the workers and release the shared memory.

        Idle workers are asked to stop; workers still in a step (the trainer failed or was
        interrupted meanwhile) are terminated: they hold nothing but their own copy of the model.
        """
        for conn, process in zip(self.conns, self.processes, strict=True):
            if self._pending:
                process.terminate()
                continue
            with suppress(OSError):  # a worker already gone
                conn.send_bytes(pickle.dumps(("stop", None)))
        for process in self.processes:
            process.join(timeout=10)
            if process.is_alive():  # pragma: no cover - a worker stuck in a forward
                process.terminate()
                process.join(timeout=5)
        for conn in self.conns:
            conn.close()
        self.conns, self.processes, self.snapshot = [], [], {}
        self._pending = False


def _serve(
    conn: Any,
    model: torch.nn.Module,
    snapshot: Mapping[str, torch.Tensor],
    stages: list[str],
    parent: int,
) -> None:
    """A worker's loop: copy θ from shared memory, evaluate the share, send the losses back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle
    torch.set_num_threads(1)
    model.eval()
    reuse = FeatureReuse(model, stages) if stages else None
    params = dict(model.named_parameters())
    state = model.state_dict()
    while True:
        if not conn.poll(1.0):
            if os.getppid() != parent:  # the trainer was killed: do not linger
                return
            continue
        try:
            message = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        if message[0] == "stop":
            return
        _, inputs, (kd, teacher), mu, jobs = message
        try:
            with torch.no_grad():
                for key, value in state.items():
                    value.copy_(snapshot[key])
                results = _share(model, params, inputs, kd, teacher, mu, jobs, reuse)
            reply: tuple[str, Any] = ("ok", results)
        except TrainingError as exc:
            reply = ("error", str(exc))
        except Exception:  # a bug: the trainer reports the worker's traceback
            reply = ("error", f"a ZO worker failed:\n{traceback.format_exc()}")
        try:
            conn.send_bytes(pickle.dumps(reply))
        except (OSError, BrokenPipeError):
            return


def _share(
    model: torch.nn.Module,
    params: Mapping[str, torch.nn.Parameter],
    inputs: Mapping[str, Any],
    kd: KDLoss | None,
    teacher: Mapping[str, torch.Tensor] | None,
    mu: float,
    jobs: Sequence[Job],
    reuse: FeatureReuse | None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    def loss_of(where: str) -> float:
        loss = zo_objective(model, inputs, kd, teacher)
        value = float(loss.detach().double().mean())
        if loss.numel() != 1 or not torch.isfinite(torch.tensor(value)):
            raise TrainingError(
                f"non-finite or non-scalar ZO loss ({value}, shape {tuple(loss.shape)}) at "
                f"{where} in a ZO worker"
            )
        return value

    if reuse is not None and jobs:
        with reuse.recording():
            loss_of("θ")
    return evaluate_coordinates(params, jobs, mu, loss_of, reuse)
