"""The ``mserve`` command line (installed as ``mserve.cli``)."""
