"""``python -m mserve``: the same command line as the ``mserve`` script."""

from mserve.cli.app import main

main()
