"""Benchmark results as JSON: ``--benchmark-json=benchmarks/results/NAME.json`` (pytest-benchmark) writes every
case's timings and ``extra_info``; this hook adds ``meshtalk`` = ``common.run_info()`` (commit, dirty tree,
device, torch, size preset, UTC time), so results can be compared across commits and machines.
``benchmarks/results_table.py`` turns such a file into the Markdown tables of RESULTS.md and checks them."""
from common import run_info


def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["meshtalk"] = run_info()
