"""Hugging Face integration: pruning callback, distillation trainer, LR scheduler, run driver."""
