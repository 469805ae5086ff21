"""`umbra-agent scan --pcap`: the network detections on a saved capture, as Zeek's `-r`.

The same `FlowAnalyzer` and `NetworkDetector` as the live sensor, fed from a capture file.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from agent.catalog.endpoints import EndpointCatalog
from agent.delivery.tracker import FindingDraft
from agent.detection.network import DEFAULT_UPLOAD_THRESHOLD, NetworkDetector
from agent.netparse.capture import CaptureReader
from agent.observations import NetworkObservation
from agent.sensors.network.flows import FlowAnalyzer, ScanStats


def analyze_pcap(
    path: Path, analyzer: FlowAnalyzer | None = None
) -> tuple[list[NetworkObservation], ScanStats]:
    """Read a pcap or pcapng file; every named flow as an observation, and the counters.

    Raises `CaptureError` when the file is not a capture, OSError when it cannot be read.
    """
    analyzer = analyzer or FlowAnalyzer()
    reader = CaptureReader(path)
    feed = analyzer.feed
    for ts, linktype, frame in reader:
        feed(ts, linktype, frame)
    analyzer.stats.capture_errors += reader.errors
    return analyzer.drain(final=True), analyzer.stats


def scan_pcap(
    path: Path,
    catalog: EndpointCatalog,
    *,
    approved: Collection[str] = (),
    upload_threshold: int | None = None,
) -> list[FindingDraft]:
    """The network detections on a saved capture: AI_SERVICE_ACCESS / AI_DATA_UPLOAD drafts.

    `approved`: service ids or vendor slugs the policy approves (no upload finding for them);
    `upload_threshold`: bytes out above which an unapproved service gets AI_DATA_UPLOAD.
    """
    detector = NetworkDetector(
        catalog,
        approved=approved,
        upload_threshold=DEFAULT_UPLOAD_THRESHOLD if upload_threshold is None else upload_threshold,
    )
    observations, _stats = analyze_pcap(path)
    drafts: list[FindingDraft] = []
    for obs in observations:
        drafts.extend(detector.detect(obs))
    return drafts
