"""``python -m mserve`` and the ``mserve`` script.

The signal handlers come first (mserve.cli.signals) and the command line is imported inside
``run``, so Ctrl-C while Python is still loading it (typer and the commands take ~0.2 s) ends like
a Ctrl-C during a command: one line and exit 130.
"""

import sys


def run() -> None:
    from mserve.cli.signals import handled_signals

    try:
        with handled_signals():
            from mserve.cli.app import app

            app()
    except KeyboardInterrupt:
        sys.stderr.write("mserve: error: interrupted\n")
        sys.exit(130)


if __name__ == "__main__":
    run()
