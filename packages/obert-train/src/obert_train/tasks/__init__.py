"""Tasks: data readers, tokenised features, collate, dev metrics (SST-2/GLUE, SQuAD, MLM)."""
