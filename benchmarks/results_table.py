"""RESULTS.md tables generated from saved benchmark JSON, and a check that they still match.

A table in RESULTS.md tied to a saved run sits between two markers:

    <!-- results-table: results/session_60s.json extra=real_time_factor -->
    | group | case | seconds | real_time_factor |
    ...
    <!-- /results-table -->

The file is a pytest-benchmark ``--benchmark-json`` output (benchmarks/conftest.py adds the commit, device and
time); ``extra=`` names ``extra_info`` keys to show as columns. ``python benchmarks/results_table.py FILE.json
[extra=KEY,...]`` prints the table; ``--check [RESULTS.md]`` regenerates every tied table and fails (exit 1)
on a difference; ``--write`` rewrites them in place. tests/test_results_tables.py runs the check.
"""
from __future__ import annotations

import json
import pathlib
import re
import sys
from typing import List, Sequence

HERE = pathlib.Path(__file__).resolve().parent
MARKER = re.compile(r"<!-- results-table: (?P<file>\S+)(?: extra=(?P<extra>\S+))? -->\n(?P<body>.*?)<!-- /results-table -->",
                    re.S)


def _number(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def table(path: pathlib.Path, extra: Sequence[str] = ()) -> str:
    """The Markdown table of a saved run: one row per case, sorted by group and name, the best time in
    seconds and the ``extra`` values, then one line naming the commit, device and time of the run."""
    data = json.loads(path.read_text())
    columns = ["group", "case", "seconds", *extra]
    rows: List[str] = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for b in sorted(data["benchmarks"], key=lambda b: (b.get("group") or "", b["name"])):
        cells = [b.get("group") or "", b["name"], _number(float(b["stats"]["min"]))]
        cells += [_number(b.get("extra_info", {}).get(key, "")) for key in extra]
        rows.append("| " + " | ".join(cells) + " |")
    info = data.get("meshtalk", {})
    rows.append("")
    rows.append(f"*{path.name}: commit {info.get('commit', '?')[:10]}{' (dirty tree)' if info.get('dirty') else ''}, "
                f"{info.get('device', '?')}, torch {info.get('torch', '?')}, size {info.get('size', '?')}, "
                f"{info.get('time', '?')}*")
    return "\n".join(rows) + "\n"


def tied_tables(markdown: str, base: pathlib.Path):
    """(match, generated table) for every tied table of ``markdown`` (paths relative to ``base``)."""
    for m in MARKER.finditer(markdown):
        extra = tuple(m.group("extra").split(",")) if m.group("extra") else ()
        yield m, table(base / m.group("file"), extra)


def check(results_md: pathlib.Path) -> List[str]:
    """The tied tables of ``results_md`` that differ from their JSON (empty when all match)."""
    text = results_md.read_text()
    return [m.group("file") for m, generated in tied_tables(text, results_md.parent) if m.group("body") != generated]


def write(results_md: pathlib.Path) -> None:
    text = results_md.read_text()
    for m, generated in reversed(list(tied_tables(text, results_md.parent))):
        text = text[:m.start("body")] + generated + text[m.end("body"):]
    results_md.write_text(text)


def main(argv: Sequence[str]) -> int:
    if argv and argv[0] in ("--check", "--write"):
        target = pathlib.Path(argv[1]) if len(argv) > 1 else HERE / "RESULTS.md"
        if argv[0] == "--write":
            write(target)
            return 0
        stale = check(target)
        for name in stale:
            print(f"{target}: the table tied to {name} differs from it (run results_table.py --write)")
        return 1 if stale else 0
    if not argv:
        print(__doc__)
        return 2
    extra = tuple(argv[1][len("extra="):].split(",")) if len(argv) > 1 and argv[1].startswith("extra=") else ()
    print(table(pathlib.Path(argv[0]), extra), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
