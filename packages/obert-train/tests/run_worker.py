"""Worker for test_harness.py: one ``run_recipe`` in a fresh process, optionally killed on purpose.

Usage: run_worker.py MODEL_DIR DATA_DIR OUT_DIR RECIPE_FILE [--resume] [--kill-step K]
       [--kill-grad N]

``--kill-step K`` sends SIGKILL to this process at the start of optimizer step K (after the
pruning callback has run that step's pruning, if any); ``--kill-grad N`` kills it while the N-th
Fisher gradient batch is being collated, i.e. in the middle of a pruning step.  One thread, so an
interrupted-and-resumed run can be compared bit for bit with an uninterrupted one.
"""

from __future__ import annotations

import argparse
import os
import signal
from typing import Any

import torch
from transformers import AutoTokenizer, TrainerCallback

from obert_train import RunOptions, load_recipe, load_task, run_recipe
from obert_train.fisher import sampler as sampler_module


class _KillAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("recipe")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--kill-step", type=int)
    parser.add_argument("--kill-grad", type=int)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if args.kill_grad is not None:
        original = sampler_module.GradientSampler._batch
        calls = {"n": 0}

        def counting(self: Any, indices: list[int], round_seed: int, index: int) -> Any:
            calls["n"] += 1
            if calls["n"] == args.kill_grad:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(self, indices, round_seed, index)

        sampler_module.GradientSampler._batch = counting  # type: ignore[method-assign]
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    task = load_task("sst2", tokenizer, data_dir=args.data, seed=0)
    torch.manual_seed(0)
    model = task.load_model(args.model)
    teacher = task.load_model(args.model)
    recipe = load_recipe(args.recipe)
    callbacks = [_KillAt(args.kill_step)] if args.kill_step is not None else []
    run_recipe(
        recipe,
        model,
        task,
        args.out,
        model_name=args.model,
        tokenizer=tokenizer,
        teacher=teacher if recipe.distillation is not None else None,
        options=RunOptions(batch_size=4, seed=7, save_steps=2, logging_steps=1, progress=False),
        resume=args.resume,
        callbacks=callbacks,
        log=lambda _line: None,
    )


if __name__ == "__main__":
    main()
