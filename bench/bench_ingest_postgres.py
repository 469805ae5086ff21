"""Ingest into PostgreSQL: findings/s over mutual TLS with two collector processes on one database.

The fleet load of bench_fleet_agents.py (1,000 enrolled agents, real mTLS streams, every batch
acked after its commit) with `--db postgres`: a PostgreSQL server started from Debian's packages
for the run, with its durable defaults (fsync, synchronous_commit), and `serve --workers 2`, two
collector processes sharing the listening port. Goal: >= 50,000 findings/s on this machine.

    .venv/bin/python bench/bench_ingest_postgres.py [bench_fleet_agents.py options]
"""

from __future__ import annotations

import sys

from bench_fleet_agents import main

if __name__ == "__main__":
    sys.argv[1:1] = ["--db", "postgres", "--collector-workers", "2"]
    main()
