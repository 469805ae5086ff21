"""The serving process's cycle collection (collector.cli.serve.tune_gc), in a child interpreter so
the test process keeps Python's defaults."""

from __future__ import annotations

import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import gc, weakref
    from collector.cli.serve import GC_THRESHOLD, tune_gc

    tune_gc()
    assert gc.get_freeze_count() > 0  # start-up's objects are out of every collection
    before = gc.get_stats()[0]["collections"]
    # A group commit's worth of rows in flight (one tuple a finding) triggers no collection.
    in_flight = [("host", f"id-{i}", i, b"body") for i in range(GC_THRESHOLD // 2)]
    assert gc.get_stats()[0]["collections"] == before, "rows in flight were walked"
    del in_flight

    class Node:
        pass

    # Garbage cycles are still collected once they outgrow the threshold.
    first = Node()
    first.me = first
    probe = weakref.ref(first)
    del first
    for _ in range(GC_THRESHOLD):
        n = Node()
        n.me = n
    assert gc.get_stats()[0]["collections"] > before and probe() is None, "cycles never collected"
    print("ok")
    """
)


def test_serve_collects_cycles_on_growth_not_on_rows_in_flight() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
