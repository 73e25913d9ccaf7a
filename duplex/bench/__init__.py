"""Benchmarks that ship with the package (``duplex bench``); ``benchmarks/`` keeps the
scripts that run them from a checkout and their recorded results."""
