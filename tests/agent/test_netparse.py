"""The network parsers on crafted packets: DNS, TLS ClientHello, QUIC Initial, HTTP, frames.

Valid inputs are built by independent means (scapy for DNS and frames, Python's own `ssl` for
real ClientHellos, the RFC 9001 / RFC 9369 test vectors for QUIC keys); hostile inputs by
hypothesis. Every parser must return None (or a partial result) on garbage, never raise.
"""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st
from net_testkit import build_hello, handshake_of, real_client_hello, records, sni_ext
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop
from scapy.layers.l2 import CookedLinuxV2, Dot1Q, Ether, Loopback

from agent.netparse import dns, frames, http, quic, tls

# --- DNS -------------------------------------------------------------------------------------


def test_dns_query_and_answers_with_cname_chain() -> None:
    response = DNS(
        id=7,
        qr=1,
        qd=DNSQR(qname="Chat.OpenAI.com."),
        an=[
            DNSRR(rrname="chat.openai.com.", type="CNAME", rdata="chat.openai.com.cdn.cloudflare.net."),
            DNSRR(rrname="chat.openai.com.cdn.cloudflare.net.", type="A", rdata="104.18.37.228"),
            DNSRR(rrname="chat.openai.com.cdn.cloudflare.net.", type="AAAA", rdata="2606:4700::6812:25e4"),
        ],
    )
    wire = bytes(response.compress())
    assert b"\xc0" in wire  # repeated names became compression pointers
    msg = dns.parse_dns(wire)
    assert msg is not None and msg.is_response
    assert msg.questions == (("chat.openai.com", 1),)
    assert msg.addresses() == {"104.18.37.228": "chat.openai.com", "2606:4700::6812:25e4": "chat.openai.com"}
    assert msg.aliases() == ("chat.openai.com.cdn.cloudflare.net",)


def test_dns_pointer_loop_and_overlong_name_are_rejected() -> None:
    header = struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0)
    assert dns.parse_dns(header + b"\xc0\x0c" + b"\x00\x01\x00\x01") is None  # points at itself
    long_name = b"".join(b"\x3f" + b"a" * 63 for _ in range(5)) + b"\x00"
    assert dns.parse_dns(header + long_name + b"\x00\x01\x00\x01") is None


def test_dns_over_tcp_split_and_pipelined() -> None:
    one = bytes(DNS(id=1, qd=DNSQR(qname="api.anthropic.com")))
    two = bytes(DNS(id=2, qd=DNSQR(qname="huggingface.co")))
    stream = struct.pack("!H", len(one)) + one + struct.pack("!H", len(two)) + two
    buffer = dns.TcpDnsBuffer()
    got = []
    for i in range(0, len(stream), 7):
        got += buffer.feed(stream[i : i + 7])
    assert [m.questions[0][0] for m in got] == ["api.anthropic.com", "huggingface.co"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_dns_never_raises(data: bytes) -> None:
    dns.parse_dns(data)
    dns.parse_dns_tcp(data)
    dns.TcpDnsBuffer().feed(data)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True), min_size=1, max_size=6))
def test_dns_names_round_trip(labels: list[str]) -> None:
    name = ".".join(labels)
    msg = dns.parse_dns(bytes(DNS(qd=DNSQR(qname=name))))
    assert msg is not None and msg.questions[0][0] == name


# --- TLS -------------------------------------------------------------------------------------


def test_real_client_hello_from_openssl() -> None:
    data = real_client_hello("api.openai.com")
    assert tls.looks_like_handshake_record(data)
    hello = tls.parse_client_hello(handshake_of(data))
    assert hello is not None and hello.server_name == "api.openai.com"
    buffer = tls.ClientHelloBuffer()
    assert buffer.feed(data) == hello


def test_client_hello_with_grease_and_alpn() -> None:
    alpn = b"\x00\x0c\x02h2\x08http/1.1"
    message = build_hello([(0x1A1A, b""), sni_ext(b"Claude.AI."), (16, alpn), (0xFAFA, b"\x00")])
    hello = tls.parse_client_hello(message)
    assert hello is not None
    assert hello.server_name == "claude.ai"
    assert hello.alpn == ("h2", "http/1.1")


def ech_ext(kind: int = 0) -> tuple[int, bytes]:
    """encrypted_client_hello as RFC 9849 §5 lays it out: an outer ECHClientHello (type 0, HPKE
    suite HKDF-SHA256 + AES-128-GCM, config id, an X25519 enc, the encrypted inner hello), or
    the inner marker (type 1, empty)."""
    if kind == 1:
        return 0xFE0D, b"\x01"
    enc, payload = bytes(range(32)), bytes(range(200))
    body = b"\x00" + struct.pack("!HHB", 1, 1, 0x2A)
    body += struct.pack("!H", len(enc)) + enc + struct.pack("!H", len(payload)) + payload
    return 0xFE0D, body


def test_encrypted_client_hello_outer_name_and_hidden_inner() -> None:
    hidden = tls.parse_client_hello(build_hello([sni_ext(b"cloudflare-ech.com"), ech_ext()]))
    assert hidden is not None and hidden.ech and hidden.name_hidden
    assert hidden.server_name == "cloudflare-ech.com"  # the outer, public name: all the wire says
    # GREASE ECH (Chrome sends it to every server): the same extension, the SNI is the real name
    grease = tls.parse_client_hello(build_hello([sni_ext(b"claude.ai"), ech_ext()]))
    assert grease is not None and grease.ech and not grease.name_hidden
    assert grease.server_name == "claude.ai"
    for ext in (ech_ext(kind=1), (0xFE0D, b"")):  # an inner marker or an empty body: no ECH
        plain = tls.parse_client_hello(build_hello([sni_ext(b"cloudflare-ech.com"), ext]))
        assert plain is not None and not plain.ech and not plain.name_hidden
    buffer = tls.ClientHelloBuffer()  # through the record layer, split as TCP delivers it
    stream = records(build_hello([(21, bytes(900)), ech_ext(), sni_ext(b"cloudflare-ech.com")]), size=400)
    results = [buffer.feed(stream[i : i + 300]) for i in range(0, len(stream), 300)]
    assert results[-1] is not None and results[-1].name_hidden


def test_client_hello_split_across_records_and_segments() -> None:
    padding = (21, bytes(3000))  # a big hello, as post-quantum key shares make them
    message = build_hello([padding, sni_ext(b"generativelanguage.googleapis.com")])
    stream = records(message, size=1000)  # four records
    buffer = tls.ClientHelloBuffer()
    results = [buffer.feed(stream[i : i + 536]) for i in range(0, len(stream), 536)]
    assert all(r is None for r in results[:-1])
    assert results[-1] is not None and results[-1].server_name == "generativelanguage.googleapis.com"


def test_client_hello_buffer_bounds() -> None:
    buffer = tls.ClientHelloBuffer()
    huge = b"\x01" + (tls.MAX_HELLO + 10).to_bytes(3, "big")
    assert buffer.feed(records(huge)) is None and buffer.failed
    assert tls.ClientHelloBuffer().feed(b"\x17\x03\x03\x00\x10" + bytes(16)) is None  # application data


def test_truncated_hello_and_bad_sni() -> None:
    message = build_hello([sni_ext(b"api.mistral.ai")])
    for cut in range(len(message)):
        assert tls.parse_client_hello(message[:cut]) is None
    hello = tls.parse_client_hello(build_hello([sni_ext(b"bad\x00name")]))
    assert hello is not None and hello.server_name is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_tls_never_raises(data: bytes) -> None:
    tls.parse_client_hello(data)
    tls.parse_client_hello(b"\x01" + data)
    buffer = tls.ClientHelloBuffer()
    buffer.feed(b"\x16\x03\x01" + data)
    buffer.feed(data)


# --- QUIC ------------------------------------------------------------------------------------


def test_quic_aes_through_libcrypto_matches_cryptography() -> None:
    """The two AES calls QUIC needs, made in the process's own libcrypto, against `cryptography`
    (an independent binding): same mask, same plaintext, and any altered byte fails the tag."""
    import random

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from agent.netparse.aes import ecb_block, gcm_decrypt

    rng = random.Random(7)
    for size in (0, 1, 16, 100, 1200):
        key, block, nonce = rng.randbytes(16), rng.randbytes(16), rng.randbytes(12)
        encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
        assert ecb_block(key, block) == encryptor.update(block) + encryptor.finalize()
        plain, aad = rng.randbytes(size), rng.randbytes(size % 40)
        sealed = AESGCM(key).encrypt(nonce, plain, aad)
        assert gcm_decrypt(key, nonce, sealed, aad) == plain
        for where in (0, len(sealed) - 1):
            broken = bytearray(sealed)
            broken[where] ^= 1
            assert gcm_decrypt(key, nonce, bytes(broken), aad) is None
        assert gcm_decrypt(key, nonce, sealed, aad + b"x") is None
    assert gcm_decrypt(key, nonce, b"short", b"") is None


RFC_DCID = bytes.fromhex("8394c8f03e515708")


def test_initial_keys_match_rfc9001_appendix_a() -> None:
    keys = quic.initial_keys(quic.V1, RFC_DCID)
    assert keys is not None
    assert keys.key.hex() == "1f369613dd76d5467730efcbe3b1a22d"
    assert keys.iv.hex() == "fa044b2f42a3fd3b46fb255c"
    assert keys.hp.hex() == "9f50449e04a0e810283a1e9933adedd2"
    encryptor = Cipher(algorithms.AES(keys.hp), modes.ECB()).encryptor()
    sample = bytes.fromhex("d1b1c98dd7689fb8ec11d242b123dc9b")
    assert encryptor.update(sample)[:5].hex() == "437b9aec36"  # RFC 9001 A.2's mask


def test_initial_keys_match_rfc9369_appendix_a() -> None:
    keys = quic.initial_keys(quic.V2, RFC_DCID)
    assert keys is not None
    assert keys.key.hex() == "8b1a0bc121284290a29e0971b5cd045d"
    assert keys.iv.hex() == "91f73e2351d8fa91660e909f"
    assert keys.hp.hex() == "45b95e15235d6f45a6b19cbcb0294ba9"


def protect_initial(
    version: int, dcid: bytes, frames_: bytes, pn: int = 2, key_dcid: bytes | None = None, scid: bytes = b""
) -> bytes:
    """A client Initial packet protected as RFC 9001 §5 says (written here independently)."""
    keys = quic.initial_keys(version, key_dcid or dcid)
    assert keys is not None
    ptype = 1 if version == quic.V2 else 0
    pn_bytes = pn.to_bytes(4, "big")
    payload_len = 1190 - len(dcid) - len(scid)  # pads the datagram to exactly 1200 bytes
    plain = frames_ + bytes(payload_len - 4 - 16 - len(frames_))
    first = 0xC0 | (ptype << 4) | 0x03
    header = (
        bytes([first])
        + version.to_bytes(4, "big")
        + bytes([len(dcid)])
        + dcid
        + bytes([len(scid)])
        + scid
        + b"\x00"
        + (0x4000 | payload_len).to_bytes(2, "big")
        + pn_bytes
    )
    nonce = (int.from_bytes(keys.iv, "big") ^ pn).to_bytes(12, "big")
    sealed = AESGCM(keys.key).encrypt(nonce, plain, header)
    packet = bytearray(header + sealed)
    pn_offset = len(header) - 4
    encryptor = Cipher(algorithms.AES(keys.hp), modes.ECB()).encryptor()
    mask = encryptor.update(bytes(packet[pn_offset + 4 : pn_offset + 20]))
    packet[0] ^= mask[0] & 0x0F
    for i in range(4):
        packet[pn_offset + i] ^= mask[1 + i]
    return bytes(packet)


def crypto_frame(offset: int, data: bytes) -> bytes:
    return b"\x06" + (0x80000000 | offset).to_bytes(4, "big") + (0x4000 | len(data)).to_bytes(2, "big") + data


@pytest.mark.parametrize("version", [quic.V1, quic.V2, 0xFF00001D], ids=["v1", "v2", "draft-29"])
def test_initial_decrypts_and_names_the_server(version: int) -> None:
    hello = handshake_of(real_client_hello("api.groq.com"))
    datagram = protect_initial(version, RFC_DCID, b"\x01\x02\x00\x00\x00\x00" + crypto_frame(0, hello))
    packets = quic.parse_datagram(datagram)
    assert packets is not None and packets[0].version == version
    assembler = quic.CryptoAssembler()
    result = None
    for offset, data in packets[0].crypto:
        result = assembler.add(offset, data)
    assert isinstance(result, tls.ClientHello) and result.server_name == "api.groq.com"


def test_crypto_reassembled_across_packets_out_of_order_with_new_dcid() -> None:
    hello = build_hello([(21, bytes(1500)), sni_ext(b"router.huggingface.co")])
    first = protect_initial(quic.V1, RFC_DCID, crypto_frame(0, hello[:900]))
    # The second Initial carries the server's chosen DCID but keeps the first DCID's keys.
    second = protect_initial(
        quic.V1, bytes(range(20)), crypto_frame(900, hello[900:]), pn=3, key_dcid=RFC_DCID
    )
    assembler = quic.CryptoAssembler()
    opened_second = quic.parse_datagram(second, original_dcid=RFC_DCID)
    assert opened_second is not None and opened_second[0].dcid == RFC_DCID
    assert quic.parse_datagram(second) is None  # its own DCID's keys cannot open it
    assert assembler.add(*opened_second[0].crypto[0]) is None
    opened_first = quic.parse_datagram(first)
    assert opened_first is not None
    result = assembler.add(*opened_first[0].crypto[0])
    assert isinstance(result, tls.ClientHello) and result.server_name == "router.huggingface.co"


def test_tampered_initial_fails_the_tag() -> None:
    datagram = bytearray(protect_initial(quic.V1, RFC_DCID, crypto_frame(0, build_hello([sni_ext(b"x.ai")]))))
    datagram[100] ^= 1
    assert quic.parse_datagram(bytes(datagram)) is None


def test_gquic_chlo_sni() -> None:
    tags = [(b"SNI\x00", b"www.youtube.com"), (b"VER\x00", b"Q046")]
    ends, values = [], b""
    for _, value in tags:
        values += value
        ends.append(len(values))
    chlo = b"CHLO" + struct.pack("<HH", len(tags), 0)
    chlo += b"".join(struct.pack("<4sI", t, e) for (t, _), e in zip(tags, ends, strict=True)) + values
    assert quic.parse_chlo_sni(chlo) == "www.youtube.com"
    assert quic.parse_chlo_sni(chlo[:-10]) is None  # cut inside the SNI value


def test_crypto_assembler_bounds() -> None:
    assembler = quic.CryptoAssembler()
    assert assembler.add(quic.MAX_CRYPTO, b"x") is None and assembler.failed
    assembler = quic.CryptoAssembler()
    for i in range(quic.MAX_CHUNKS + 5):
        assembler.add(10 + 2 * i, b"x")
    assert assembler.failed


@settings(max_examples=300, deadline=None)
@given(
    st.binary(min_size=0, max_size=1400),
    st.sampled_from([b"", b"\xc3\x00\x00\x00\x01", b"\xc3\x6b\x33\x43\xcf"]),
)
def test_quic_never_raises(data: bytes, prefix: bytes) -> None:
    quic.parse_datagram(prefix + data)
    quic.parse_datagram((prefix + data).ljust(1200, b"\x00"))
    quic.parse_chlo_sni(b"CHLO" + data)
    assembler = quic.CryptoAssembler()
    assembler.add(0, data)


# --- HTTP ------------------------------------------------------------------------------------


def test_http_host_header_and_forms() -> None:
    req = http.parse_http_request(
        b"POST /v1/chat HTTP/1.1\r\nUser-Agent: x\r\nHost: API.OpenAI.com:8080\r\n\r\n"
    )
    assert req is not None and req.host == "api.openai.com" and req.method == "POST"
    proxy = http.parse_http_request(b"GET http://ollama.com/library HTTP/1.1\r\nAccept: */*\r\n\r\n")
    assert proxy is not None and proxy.host == "ollama.com"
    connect = http.parse_http_request(b"CONNECT api.anthropic.com:443 HTTP/1.1\r\n\r\n")
    assert connect is not None and connect.host == "api.anthropic.com"
    v6 = http.parse_http_request(b"GET / HTTP/1.1\r\nHost: [::1]:11434\r\n\r\n")
    assert v6 is not None and v6.host == "::1"
    assert http.parse_http_request(b"SETUP rtsp://cam/x RTSP/1.0\r\nCSeq: 1\r\n\r\n") is None
    assert http.parse_http_request(b"GET / RTSP/1.0\r\n\r\n") is None


def test_http_headers_split_across_segments() -> None:
    buffer = http.HttpRequestBuffer()
    parts = [b"GE", b"T /api/pull HTTP/1.1\r\nUser-Agent: ollama\r\nHo", b"st: registry.ollama.ai\r\n\r\n"]
    results = [buffer.feed(p) for p in parts]
    assert results[:2] == [None, None]
    assert results[2] is not None and results[2].host == "registry.ollama.ai"
    assert http.HttpRequestBuffer().feed(b"\x16\x03\x01\x02\x00") is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_http_never_raises(data: bytes) -> None:
    http.parse_http_request(data)
    http.parse_http_request(b"GET / HTTP/1.1\r\n" + data)
    buffer = http.HttpRequestBuffer()
    buffer.feed(b"GET / HTTP/1.1\r\n")
    buffer.feed(data)


# --- frames ----------------------------------------------------------------------------------


def test_link_types() -> None:
    inner = IP(src="10.0.0.2", dst="1.2.3.4") / TCP(sport=40000, dport=443, flags="PA") / b"hello"
    cases = [
        (frames.LINKTYPE_ETHERNET, bytes(Ether() / inner)),
        (frames.LINKTYPE_ETHERNET, bytes(Ether() / Dot1Q(vlan=5) / Dot1Q(vlan=7) / inner)),
        (frames.LINKTYPE_RAW, bytes(inner)),
        (frames.LINKTYPE_NULL, bytes(Loopback(type=2) / inner)),
        (frames.LINKTYPE_LINUX_SLL2, bytes(CookedLinuxV2(proto=0x0800) / inner)),
        (frames.LINKTYPE_LINUX_SLL, struct.pack("!HHH8sH", 0, 772, 6, bytes(8), 0x0800) + bytes(inner)),
    ]
    for linktype, frame in cases:
        p = frames.decode(linktype, frame)
        assert p is not None, linktype
        assert (p.sport, p.dport, p.payload, p.proto) == (40000, 443, b"hello", frames.TCP)
        assert p.src == bytes([10, 0, 0, 2])


def test_ipv6_extension_headers_and_padding() -> None:
    pkt = IPv6(src="::1", dst="::2") / IPv6ExtHdrHopByHop() / UDP(sport=5353, dport=53) / b"q"
    p = frames.decode(frames.LINKTYPE_ETHERNET, bytes(Ether() / pkt) + bytes(20))  # trailing padding
    assert p is not None and p.proto == frames.UDP and p.payload == b"q"
    assert p.ip_length == len(bytes(pkt))


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([*sorted(frames.SUPPORTED_LINKTYPES), 999]), st.binary(max_size=200))
def test_frames_never_raise(linktype: int, data: bytes) -> None:
    frames.decode(linktype, data)
    frames.decode(linktype, bytes(Ether())[:14] + b"\x45" + data)
