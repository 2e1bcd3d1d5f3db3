"""``python -m obert``: the ``obert`` command line."""

from obert.cli import main

main()
