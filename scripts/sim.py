"""``make sim``: the cocotb regression (tests/test_sim_*.py), one summary line per unit file,
with the results (vectors, scalars, output beats) its benches checked against the golden
model, per unit (``tb.report``, carried by each test's ``checked`` property)."""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


class Summary:
    def __init__(self):
        self.counts = defaultdict(lambda: {"passed": 0, "failed": 0, "skipped": 0, "s": 0.0,
                                           "checked": defaultdict(int)})

    def pytest_runtest_logreport(self, report):
        unit = Path(report.nodeid.split("::")[0]).stem.removeprefix("test_sim_")
        c = self.counts[unit]
        if report.when == "call":
            c[report.outcome] += 1
            c["s"] += report.duration
            for name, value in report.user_properties:
                if name == "checked":
                    for what, n in value.items():
                        c["checked"][what] += n
        elif report.failed:
            c["failed"] += 1


def main() -> int:
    files = sorted(str(p) for p in (ROOT / "tests").glob("test_sim_*.py"))
    summary = Summary()
    t0 = time.monotonic()
    rc = pytest.main(["-q", "-p", "no:cacheprovider", *files, *sys.argv[1:]],
                     plugins=[summary])
    print()
    for unit, c in sorted(summary.counts.items()):
        skipped = f", {c['skipped']} skipped" if c["skipped"] else ""
        checked = ", ".join(f"{what} {n:,}" for what, n in sorted(c["checked"].items()))
        checked = f"; results checked: {checked}" if checked else ""
        print(f"sim {unit:<12} {c['passed']} passed, {c['failed']} failed{skipped} "
              f"({c['s']:.0f} s){checked}")
    print(f"sim total {time.monotonic() - t0:.0f} s")
    return int(rc)


if __name__ == "__main__":
    sys.exit(main())
