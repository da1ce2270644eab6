"""Subcommands of the ``avionics`` command line (see :mod:`instrument.cli`)."""
