"""Flows to findings: the analyzer on crafted captures, and the network detector's drafts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from net_testkit import build_hello, real_client_hello, records, sni_ext
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import CookedLinux, Ether
from scapy.packet import Packet
from scapy.utils import PcapNgWriter, wrpcap
from umbra.v1 import finding_pb2 as fpb

from agent.catalog.endpoints import EndpointCatalog, load_endpoint_catalog
from agent.cli.pcap import analyze_pcap, scan_pcap
from agent.detection.network import NetworkDetector
from agent.observations import ProcessObservation
from agent.sensors.network.flows import FlowAnalyzer, NetworkObservation

CLIENT, SERVER = "10.1.1.2", "104.18.33.45"


@pytest.fixture(scope="module")
def catalog() -> EndpointCatalog:
    return load_endpoint_catalog()


def tcp_session(
    hello_records: bytes, upload: int = 0, segment: int = 300, sport: int = 51000
) -> list[Packet]:
    """A TCP connection: handshake, the hello in `segment`-byte pieces, then `upload` bytes."""
    c, s = IP(src=CLIENT, dst=SERVER), IP(src=SERVER, dst=CLIENT)
    seq, ack = 1000, 5000
    pkts: list[Packet] = [
        Ether() / c / TCP(sport=sport, dport=443, flags="S", seq=seq - 1),
        Ether() / s / TCP(sport=443, dport=sport, flags="SA", seq=ack - 1, ack=seq),
    ]
    data = hello_records + bytes(upload)
    for i in range(0, len(data), segment):
        chunk = data[i : i + segment]
        pkts.append(Ether() / c / TCP(sport=sport, dport=443, flags="PA", seq=seq + i, ack=ack) / chunk)
    pkts.append(
        Ether() / s / TCP(sport=443, dport=sport, flags="A", seq=ack, ack=seq + len(data)) / bytes(700)
    )
    for i, p in enumerate(pkts):
        p.time = 1700000000 + i * 0.01
    return pkts


def test_split_client_hello_names_the_flow_and_counts_bytes(tmp_path: Path, catalog: EndpointCatalog) -> None:
    pkts = tcp_session(real_client_hello("api.openai.com"), upload=3_000_000, segment=1400)
    path = tmp_path / "upload.pcap"
    wrpcap(str(path), pkts)
    observations, stats = analyze_pcap(path)
    assert [(o.host_name, o.source) for o in observations] == [("api.openai.com", "tls_sni")]
    obs = observations[0]
    assert (obs.client_ip, obs.server_ip, obs.server_port, obs.transport) == (CLIENT, SERVER, 443, "tcp")
    assert obs.bytes_out > 3_000_000 and 700 < obs.bytes_in < 1000
    assert obs.packets == len(pkts)
    assert stats.tls_hellos == 1

    drafts = scan_pcap(path, catalog, upload_threshold=1_000_000)
    kinds = sorted(fpb.FindingKind.Name(d.kind) for d in drafts)
    assert kinds == ["KIND_AI_DATA_UPLOAD", "KIND_AI_SERVICE_ACCESS"]
    access = next(d for d in drafts if d.kind == fpb.KIND_AI_SERVICE_ACCESS)
    assert access.key == "OpenAI|api.openai.com|none"
    assert access.severity == fpb.SEVERITY_MEDIUM and access.confidence == pytest.approx(0.95)
    assert access.subject == "openai-api"
    net = access.evidence[0].network
    assert (net.host_name, net.vendor, net.category, net.source) == (
        "api.openai.com",
        "OpenAI",
        "model_api",
        "tls_sni",
    )
    assert (net.remote_address, net.remote_port) == (SERVER, 443)
    upload = next(d for d in drafts if d.kind == fpb.KIND_AI_DATA_UPLOAD)
    assert upload.severity == fpb.SEVERITY_HIGH and "MB sent to OpenAI API" in upload.summary
    # An approved service is still an access, never an upload.
    approved = scan_pcap(path, catalog, approved={"openai"}, upload_threshold=1_000_000)
    assert [d.kind for d in approved] == [fpb.KIND_AI_SERVICE_ACCESS]


def test_out_of_order_and_retransmitted_segments(tmp_path: Path) -> None:
    hello = records(build_hello([(21, bytes(2000)), sni_ext(b"api.anthropic.com")]), size=700)
    pkts = tcp_session(hello, segment=500)
    data = pkts[2:-1]
    reordered = [*pkts[:2], data[1], data[0], data[0], *data[2:], pkts[-1]]  # swap, then a retransmission
    path = tmp_path / "reorder.pcapng"
    with PcapNgWriter(str(path)) as writer:
        for p in reordered:
            writer.write(p)
    observations, _ = analyze_pcap(path)
    assert [o.host_name for o in observations] == ["api.anthropic.com"]


def test_loopback_packets_seen_twice_count_once(tmp_path: Path) -> None:
    hello = real_client_hello("claude.ai")
    c, s = IP(src="127.0.0.1", dst="127.0.0.1"), IP(src="127.0.0.1", dst="127.0.0.1")
    base = [
        c / TCP(sport=40000, dport=8443, flags="S", seq=99),
        s / TCP(sport=8443, dport=40000, flags="SA", seq=499, ack=100),
        c / TCP(sport=40000, dport=8443, flags="PA", seq=100, ack=500) / hello,
    ]
    pkts = []
    for i, p in enumerate(base):  # "any" capture: lo's outgoing and incoming copy
        for pkttype in (4, 0):
            frame = CookedLinux(pkttype=pkttype, lladdrtype=772, proto=0x0800) / p
            frame.time = 1700000000 + i * 0.01 + (0.000005 if pkttype == 0 else 0)
            pkts.append(frame)
    path = tmp_path / "lo.pcap"
    wrpcap(str(path), pkts)
    observations, stats = analyze_pcap(path)
    assert stats.loopback_duplicates == 3
    assert len(observations) == 1 and observations[0].packets == 3
    assert observations[0].host_name == "claude.ai" and observations[0].server_port == 8443


def test_dns_names_and_flows_named_by_answers(tmp_path: Path, catalog: EndpointCatalog) -> None:
    q = (
        IP(src=CLIENT, dst="9.9.9.9")
        / UDP(sport=33333, dport=53)
        / DNS(id=5, qd=DNSQR(qname="api.mistral.ai"))
    )
    r = (
        IP(src="9.9.9.9", dst=CLIENT)
        / UDP(sport=53, dport=33333)
        / DNS(
            id=5,
            qr=1,
            qd=DNSQR(qname="api.mistral.ai"),
            an=[
                DNSRR(rrname="api.mistral.ai", type="CNAME", rdata="edge.example.net"),
                DNSRR(rrname="edge.example.net", type="A", rdata=SERVER),
            ],
        )
    )
    no_sni = tcp_session(
        records(build_hello([])), sport=52000
    )  # a hello without SNI, to the answer's address
    pkts = [Ether() / q, Ether() / r, *no_sni]
    for i, p in enumerate(pkts):
        p.time = 1700000000 + i * 0.01
    path = tmp_path / "dns.pcap"
    wrpcap(str(path), pkts)
    observations, _ = analyze_pcap(path)
    by_source = {(o.host_name, o.source, o.resolved, o.server_port) for o in observations}
    assert by_source == {("api.mistral.ai", "dns", False, 53), ("api.mistral.ai", "dns", True, 443)}
    dns_obs = next(o for o in observations if not o.resolved)
    assert dns_obs.aliases == ("edge.example.net",) and dns_obs.packets == 2
    drafts = scan_pcap(path, catalog)
    confidences = sorted(d.confidence for d in drafts)
    assert confidences == [pytest.approx(0.6), pytest.approx(0.9)]


def test_detector_ignores_other_observations_and_unknown_hosts(catalog: EndpointCatalog) -> None:
    detector = NetworkDetector(catalog)
    proc = ProcessObservation(10, 1, "python3", "/usr/bin/python3", ("python3",), "alice", 1.0)
    assert detector.detect(proc) == []
    unknown = NetworkObservation(
        "www.example.org", "tls_sni", CLIENT, 5, SERVER, 443, "tcp", 1.0, 2.0, 10, 10, 2
    )
    assert detector.detect(unknown) == []
    via_alias = NetworkObservation(
        "chat.corp.example",
        "dns",
        CLIENT,
        5,
        "10.0.0.53",
        53,
        "udp",
        1.0,
        1.0,
        80,
        120,
        2,
        aliases=("corp.openai.azure.com",),
        process=proc,
    )
    (draft,) = detector.detect(via_alias)
    assert draft.confidence == pytest.approx(0.85)
    assert draft.key == "Microsoft|chat.corp.example|/usr/bin/python3"
    assert draft.user == "alice" and "via corp.openai.azure.com" in draft.summary


def test_flow_table_is_bounded() -> None:
    analyzer = FlowAnalyzer(max_flows=100)
    for i in range(1000):
        pkt = IP(src=CLIENT, dst=SERVER) / UDP(sport=10000 + i, dport=443) / b"x"
        analyzer.feed(float(i), 101, bytes(pkt))
    assert len(analyzer._flows) == 100
    assert analyzer.stats.flows_evicted == 900


def test_an_uploads_summary_and_evidence_say_who_counted_it(catalog: EndpointCatalog) -> None:
    """The kernel's count is exact; a count from captured packets while the capture lost some
    may be short, and the finding says so."""
    detector = NetworkDetector(catalog, upload_threshold=1_000_000)
    flow = NetworkObservation(
        "api.openai.com", "tls_sni", CLIENT, 5, SERVER, 443, "tcp", 1.0, 2.0, 21_000_000, 9_000, 900
    )
    cases = {
        "kernel": (0, "counted by the kernel (the socket's TCP counters)"),
        "capture": (37, "counted from captured packets; the capture lost 37 packets meanwhile, so it may"),
        "kernel+capture": (0, "counted by the kernel until the socket closed unread, then from captured"),
    }
    for source, (drops, says) in cases.items():
        drafts = detector.detect(replace(flow, bytes_source=source, capture_drops=drops))
        upload = next(d for d in drafts if d.kind == fpb.KIND_AI_DATA_UPLOAD)
        assert upload.summary.startswith("21.0 MB sent to OpenAI API (api.openai.com), "), upload.summary
        assert says in upload.summary, upload.summary
        net = upload.evidence[0].network
        assert (net.bytes_out, net.bytes_source, net.capture_drops) == (21_000_000, source, drops)
