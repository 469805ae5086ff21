"""The live network sensor in a namespace, its observations as JSON lines.

`python sensor_probe.py`, run in the client's network namespace: it starts a `NetworkSensor`
on every interface watching the endpoint catalog's names, prints {"ready": true} once the
capture thread runs, then polls every 0.5 s and prints one line per observation (host, source,
transport, client port, pid of the owning process or null) until its stdin closes; then a
last poll and one summary line: the attribution counters (asked, found, seconds,
describe_seconds).
"""

from __future__ import annotations

import json
import select
import sys
import time

from agent.catalog.endpoints import default_endpoint_catalog
from agent.sensors.network.sensor import NetworkSensor


def _print(sensor: NetworkSensor) -> None:
    for obs in sensor.poll():
        line = {
            "host": obs.host_name,
            "source": obs.source,
            "transport": obs.transport,
            "client_port": obs.client_port,
            "server_port": obs.server_port,
            "pid": obs.process.pid if obs.process is not None else None,
        }
        print(json.dumps(line), flush=True)


def main() -> None:
    catalog = default_endpoint_catalog()
    sensor = NetworkSensor(watch=lambda host: catalog.match(host) is not None)
    sensor.start()
    print(json.dumps({"ready": True, "state": sensor.status().state.value}), flush=True)
    try:
        while True:
            readable, _, _ = select.select([sys.stdin], [], [], 0.5)
            _print(sensor)
            if readable and not sys.stdin.readline():
                break
        time.sleep(0.3)
        _print(sensor)
        owners = sensor.owners
        summary = {
            "asked": owners.asked,
            "found": owners.found,
            "seconds": owners.seconds,
            "describe_seconds": owners.describe_seconds,
        }
        print(json.dumps(summary), flush=True)
    finally:
        sensor.stop()


if __name__ == "__main__":
    main()
