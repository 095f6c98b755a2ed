"""``python -m d2ldw.bench``: the benchmarks' command line (d2ldw.bench_cli).

Python imports the package ``d2ldw.bench`` once and then runs this file, so the measuring
code is executed once, as ``d2ldw.bench`` (a module run with ``-m`` would be executed a
second time, as ``__main__``, when the command line imports it). Hand-written.
"""
import sys

from d2ldw.bench_cli import main

sys.exit(main())
