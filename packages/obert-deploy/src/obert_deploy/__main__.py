"""``python -m obert_deploy`` runs the CLI."""

from obert_deploy.cli import main

if __name__ == "__main__":
    main()
