"""RESULTS.md tables tied to saved benchmark JSON (benchmarks/results/) equal what the JSON gives."""
import pathlib
import sys

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import results_table  # noqa: E402


def test_tied_tables_match_their_json():
    text = (BENCH / "RESULTS.md").read_text()
    tied = [m.group("file") for m, _ in results_table.tied_tables(text, BENCH)]
    assert tied, "RESULTS.md ties no table to a saved run"
    assert results_table.check(BENCH / "RESULTS.md") == []
