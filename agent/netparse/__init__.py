"""Hardened, bounded parsers for the few bytes of network traffic that name a service.

One module per concern: `frames` (link layer, IPv4/IPv6, TCP/UDP), `dns`, `tls` (ClientHello
and its SNI, with a bounded per-flow reassembly buffer), `quic` (Initial packets: keys,
header protection, AES-GCM, CRYPTO reassembly) and `http` (request line and Host header).

Every parser takes untrusted bytes and returns a result or None. None of them raises on bad
input, loops without a bound, or allocates from a length read off the wire: lengths are
checked against the bytes actually present, and every buffer has a byte and a time limit.
Callers count the Nones (the scanner's `ScanStats`), so a broken capture shows up as numbers,
not as a crash.
"""
