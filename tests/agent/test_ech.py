"""Encrypted Client Hello end to end: a capture (written by scapy) of a client that resolves an AI
service and then connects with ECH through a fronting provider, and of one with no DNS answer
to go by, read by `scan --pcap`'s code with the packaged endpoint catalog."""

from __future__ import annotations

from pathlib import Path

from net_testkit import build_hello, records, sni_ext
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap
from umbra.v1 import finding_pb2 as fpb

from agent.catalog.endpoints import default_endpoint_catalog
from agent.cli.pcap import analyze_pcap, scan_pcap
from tests.agent.test_netparse import ech_ext

CLIENT = "10.0.0.7"
FRONT = "104.18.32.47"  # an address of the fronting provider, given by DNS for the AI service
UNKNOWN = "104.16.9.9"  # the provider again, no DNS answer seen for it


def tls_flow(server: str, sport: int, hello: bytes, at: float) -> list[Ether]:
    """A TCP handshake and the client's first segment carrying the ClientHello records."""
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    syn = eth / IP(src=CLIENT, dst=server) / TCP(sport=sport, dport=443, flags="S", seq=1000)
    synack = (
        Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01")
        / IP(src=server, dst=CLIENT)
        / TCP(sport=443, dport=sport, flags="SA", seq=5000, ack=1001)
    )
    ack = eth / IP(src=CLIENT, dst=server) / TCP(sport=sport, dport=443, flags="A", seq=1001, ack=5001)
    data = eth / IP(src=CLIENT, dst=server) / TCP(sport=sport, dport=443, flags="PA", seq=1001, ack=5001)
    packets = [syn, synack, ack, data / records(hello)]
    for i, p in enumerate(packets):
        p.time = at + i * 0.01
    return packets


def write_capture(path: Path) -> None:
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:03")
    query = (
        eth
        / IP(src=CLIENT, dst="10.0.0.1")
        / UDP(sport=53000, dport=53)
        / DNS(id=7, rd=1, qd=DNSQR(qname="api.openai.com", qtype="A"))
    )
    answer = (
        Ether(src="02:00:00:00:00:03", dst="02:00:00:00:00:01")
        / IP(src="10.0.0.1", dst=CLIENT)
        / UDP(sport=53, dport=53000)
        / DNS(id=7, qr=1, qd=DNSQR(qname="api.openai.com"), an=DNSRR(rrname="api.openai.com", rdata=FRONT))
    )
    query.time, answer.time = 100.0, 100.02
    hello = build_hello([sni_ext(b"cloudflare-ech.com"), ech_ext()])
    wrpcap(
        str(path),
        [query, answer, *tls_flow(FRONT, 40001, hello, 100.1), *tls_flow(UNKNOWN, 40002, hello, 101.0)],
    )


def test_ech_flow_is_named_by_dns_or_reported_hidden(tmp_path: Path) -> None:
    capture = tmp_path / "ech.pcap"
    write_capture(capture)
    observations, _ = analyze_pcap(capture)
    flows = {o.server_ip: o for o in observations if o.server_port == 443}
    named, hidden = flows[FRONT], flows[UNKNOWN]
    assert (named.host_name, named.source, named.ech_outer_name) == (
        "api.openai.com",
        "dns",
        "cloudflare-ech.com",
    )
    assert named.resolved
    assert (hidden.host_name, hidden.source, hidden.ech_outer_name) == (
        "cloudflare-ech.com",
        "tls_sni",
        "cloudflare-ech.com",
    )

    drafts = scan_pcap(capture, default_endpoint_catalog())
    access = [d for d in drafts if d.kind == fpb.KIND_AI_SERVICE_ACCESS]
    openai = next(d for d in access if d.evidence[0].network.remote_address == FRONT)
    assert openai.evidence[0].network.host_name == "api.openai.com"
    assert "Encrypted Client Hello to cloudflare-ech.com hid the name" in openai.summary
    assert openai.severity > fpb.SEVERITY_INFO
    behind = next(d for d in access if d.evidence[0].network.host_name == "cloudflare-ech.com")
    assert behind.severity == fpb.SEVERITY_INFO and "real server name is hidden" in behind.summary
    assert behind.evidence[0].network.category == "ech_hidden"
    assert behind.evidence[0].network.remote_address == UNKNOWN


def test_grease_ech_keeps_the_real_name(tmp_path: Path) -> None:
    """Chrome's GREASE ECH to a named server: the SNI is the real name, no ECH verdict."""
    capture = tmp_path / "grease.pcap"
    wrpcap(str(capture), tls_flow(FRONT, 40003, build_hello([sni_ext(b"api.openai.com"), ech_ext()]), 5.0))
    observations, _ = analyze_pcap(capture)
    (flow,) = [o for o in observations if o.server_port == 443]
    assert (flow.host_name, flow.source, flow.ech_outer_name) == ("api.openai.com", "tls_sni", "")
