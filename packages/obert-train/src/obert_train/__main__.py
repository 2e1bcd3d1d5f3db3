"""``python -m obert_train`` runs the ``obert-train`` command line (e.g. under torchrun)."""

from obert_train.cli import main

main()
