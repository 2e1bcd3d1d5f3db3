"""The one-shot oBERT pruner on CUDA agrees with the CPU run (skipped without a GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import BertForSequenceClassification, BertTokenizer

from obert_train import ClassificationTask, load_task, oneshot_prune, resolve_target_params

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.mark.parametrize("mask_type", ["unstructured", "block4"])
def test_cuda_oneshot_matches_cpu(
    tiny_bert: BertForSequenceClassification,
    tokenizer: BertTokenizer,
    sst2_dir: Path,
    mask_type: str,
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    assert isinstance(task, ClassificationTask)
    settings = {
        "num_grads": 8,
        "grad_batch_size": 4,
        "fisher_block_size": 16,
        "mask_type": mask_type,
    }
    cpu = BertForSequenceClassification(tiny_bert.config)
    cpu.load_state_dict(tiny_bert.state_dict())
    gpu = BertForSequenceClassification(tiny_bert.config)
    gpu.load_state_dict(tiny_bert.state_dict())
    cpu.eval()
    gpu.cuda().eval()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    res_cpu = oneshot_prune(cpu, "obert", 0.6, settings=settings, task=task, progress=False)
    res_gpu = oneshot_prune(gpu, "obert", 0.6, settings=settings, task=task, progress=False)
    assert res_gpu.sparsity == pytest.approx(res_cpu.sparsity, abs=1e-12)
    m_cpu = {n: (p != 0).reshape(-1) for n, p in resolve_target_params(cpu).items()}
    m_gpu = {n: (p != 0).reshape(-1) for n, p in resolve_target_params(gpu).items()}
    for name, mask in res_gpu.masks.items():
        assert mask.device.type == "cuda", name  # the masks live with the weights
        assert torch.equal(mask, m_gpu[name]), name
    agree = sum(int((m_cpu[n].cpu() == m_gpu[n].cpu()).sum()) for n in m_cpu) / sum(
        m.numel() for m in m_cpu.values()
    )
    assert agree > 0.99  # float32 gradients on two devices: only near-ties may flip
    for name, p in gpu.named_parameters():
        assert p.device.type == "cuda", name
