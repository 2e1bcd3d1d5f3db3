"""``python -m obert_deploy.cli`` runs the CLI (as ``python -m obert_deploy`` does)."""

from obert_deploy.cli import main

if __name__ == "__main__":
    main()
