"""Benchmarks behind ``make bench-offline``, ``make bench-triton`` and ``make bench-serve``.

Each module has a ``main()`` that prints a markdown table and writes
``$CASCADE_HOME/reports/bench/<name>.md`` and ``.json``.
"""
