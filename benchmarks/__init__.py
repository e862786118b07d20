"""Side-by-side measurements and studies of the project (not run by CI; their results are in ``benchmarks/results``).

Each study is a module of this package, run from the repository's root as a module::

    python -m benchmarks.pretraining_health --quick --results /tmp/ph.json
    python -m benchmarks.<name> --help

``benchmarks.common`` holds what the studies share (command-line lists, atomic result writing, the command a result
records, running a study in a fresh process); the tests import the studies as ``from benchmarks import <name>``.
"""
