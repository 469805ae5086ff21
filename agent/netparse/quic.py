"""QUIC Initial packets: the ClientHello inside, decrypted with keys anyone can derive.

A client's first packets are protected with keys derived from the Destination Connection ID
and a per-version public salt (RFC 9001 §5.2; RFC 9369 §3.3.1 for QUIC v2, whose HKDF labels
are "quicv2 ..."). We derive them with HKDF, remove header protection (AES-ECB mask over a
16-byte sample), decrypt the payload with AES-128-GCM (a wrong guess fails the tag: no false
positives), walk the frames (PADDING, PING, ACK are stepped over; CRYPTO collected; anything
else ends the walk) and hand the CRYPTO bytes to `CryptoAssembler`, which reassembles them by
offset across frames and packets (a post-quantum ClientHello spans two Initials) until the
ClientHello is complete.

Besides v1 and v2 we read what still flies in captures: IETF drafts 22-34 (their salts),
Facebook mvfst's versions, "forcing version negotiation" versions (draft-29 keys), and Google
QUIC: Q050/T050/T051 (encrypted like drafts, their own salts; CRYPTO is frame type 0x08) and
the older plaintext versions up to Q046, whose CHLO message carries the SNI as a tag.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

from agent.netparse.aes import ecb_block, gcm_decrypt
from agent.netparse.tls import CLIENT_HELLO, ClientHello, parse_client_hello

__all__ = [
    "MAX_CRYPTO",
    "CryptoAssembler",
    "InitialKeys",
    "InitialPacket",
    "initial_keys",
    "parse_chlo_sni",
    "parse_datagram",
]

V1: Final = 0x00000001
V2: Final = 0x6B3343CF
MIN_INITIAL_DATAGRAM: Final = 1200  # RFC 9000 §14.1: clients pad Initial datagrams to this
MAX_CRYPTO: Final = 65536  # CRYPTO bytes held per flow
MAX_CHUNKS: Final = 64
_MAX_PACKETS_PER_DATAGRAM: Final = 4
_MAX_FRAMES: Final = 256
_MAX_ACK_RANGES: Final = 256
_MAX_CID: Final = 20

_SALT_V1: Final = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")
_SALT_V2: Final = bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9")
_SALT_D22: Final = bytes.fromhex("7fbcdb0e7c66bbe9193a96cd21519ebd7a02644a")
_SALT_D23: Final = bytes.fromhex("c3eef712c72ebb5a11a7d2432bb46365bef9f502")
_SALT_D29: Final = bytes.fromhex("afbfec289993d24c9e9786f19c6111e04390a899")
_SALT_Q050: Final = bytes.fromhex("504574efd066fe2f9d945cfcdbd3a7f0d3b56b45")
_SALT_T050: Final = bytes.fromhex("7ff579e5acd072915580304c43a2367c60488310")
_SALT_T051: Final = bytes.fromhex("7a4edef4e7ccee5fa4506c19124fc8ccda6e033d")

_Q050: Final = 0x51303530
_T050: Final = 0x54303530
_T051: Final = 0x54303531


@dataclass(frozen=True, slots=True)
class InitialKeys:
    key: bytes
    iv: bytes
    hp: bytes


@dataclass(frozen=True, slots=True)
class InitialPacket:
    """A decrypted client Initial: the CRYPTO data it carried, as (offset, bytes) chunks."""

    version: int
    dcid: bytes
    crypto: tuple[tuple[int, bytes], ...]


def _salt(version: int) -> tuple[bytes, bool] | None:
    """(salt, v2 labels?) for a version whose Initials we can open, else None."""
    if version == V1:
        return _SALT_V1, False
    if version == V2:
        return _SALT_V2, True
    if version >> 8 == 0xFF0000:  # IETF drafts
        draft = version & 0xFF
        if draft <= 22:
            return _SALT_D22, False
        if draft <= 28:
            return _SALT_D23, False
        if draft <= 32:
            return _SALT_D29, False
        return _SALT_V1, False  # drafts 33/34 use v1's constants
    if version in (0xFACEB001,):  # mvfst draft-22
        return _SALT_D22, False
    if version in (0xFACEB002, 0xFACEB00E):  # mvfst draft-27, mvfst experimental
        return _SALT_D23, False
    if version & 0x0F0F0F0F == 0x0A0A0A0A:  # forcing version negotiation: no real version
        return _SALT_D29, False
    if version == _Q050:
        return _SALT_Q050, False
    if version == _T050:
        return _SALT_T050, False
    if version == _T051:
        return _SALT_T051, False
    return None


def _is_gquic(version: int) -> bool:
    return version >> 24 in (0x51, 0x54) and version >> 16 & 0xFF == 0x30


def _expand_label(secret: bytes, label: bytes, length: int) -> bytes:
    """TLS 1.3's HKDF-Expand-Label with SHA-256 (RFC 8446 §7.1, RFC 5869 §2.3), with the stdlib's HMAC."""
    full = b"tls13 " + label
    info = struct.pack("!HB", length, len(full)) + full + b"\x00"
    out, block = b"", b""
    for counter in range(1, -(-length // 32) + 1):
        block = hmac.digest(secret, block + info + bytes([counter]), hashlib.sha256)
        out += block
    return out[:length]


_KEY_CACHE: OrderedDict[tuple[int, bytes], InitialKeys | None] = OrderedDict()
_KEY_CACHE_SIZE: Final = 1024


def initial_keys(version: int, dcid: bytes) -> InitialKeys | None:
    """The client's Initial keys for a version and Destination Connection ID (cached)."""
    cache_key = (version, dcid)
    if cache_key in _KEY_CACHE:
        _KEY_CACHE.move_to_end(cache_key)
        return _KEY_CACHE[cache_key]
    salt = _salt(version)
    keys: InitialKeys | None = None
    if salt is not None:
        salt_bytes, v2 = salt
        initial_secret = hmac.digest(salt_bytes, dcid, hashlib.sha256)  # HKDF-Extract
        client = _expand_label(initial_secret, b"client in", 32)
        prefix = b"quicv2 " if v2 else b"quic "
        keys = InitialKeys(
            key=_expand_label(client, prefix + b"key", 16),
            iv=_expand_label(client, prefix + b"iv", 12),
            hp=_expand_label(client, prefix + b"hp", 16),
        )
    _KEY_CACHE[cache_key] = keys
    if len(_KEY_CACHE) > _KEY_CACHE_SIZE:
        _KEY_CACHE.popitem(last=False)
    return keys


def _varint(data: bytes, pos: int) -> tuple[int, int] | None:
    """RFC 9000 §16 variable-length integer at `pos`: (value, next position)."""
    if pos >= len(data):
        return None
    first = data[pos]
    size = 1 << (first >> 6)
    if pos + size > len(data):
        return None
    value = first & 0x3F
    for i in range(1, size):
        value = (value << 8) | data[pos + i]
    return value, pos + size


def _initial_type(version: int) -> int:
    return 1 if version == V2 else 0  # RFC 9369 §3.2: v2 renumbers the long-header types


def parse_datagram(datagram: bytes, original_dcid: bytes | None = None) -> list[InitialPacket] | None:
    """Decrypt the client Initial packets in one UDP datagram; None when it holds none we can open.

    Coalesced packets (RFC 9000 §12.2) are walked by their Length fields; a packet we cannot
    open (another type, an unknown version, a failed tag) is skipped. Initial keys come from
    the client's first Destination Connection ID for the whole handshake (RFC 9001 §5.2), even
    after the server has given it a new one: pass that first DCID as `original_dcid` (each
    packet's `dcid` says which DCID's keys opened it).
    """
    if len(datagram) < 14:
        return None
    if datagram[0] & 0x80 == 0:
        # Google QUIC's public header (up to Q043): flags with version and 8-byte CID bits set.
        if datagram[0] & 0x09 != 0x09 or datagram[9] not in b"QT":
            return None
        version = struct.unpack_from("!I", datagram, 9)[0]
    else:
        version = struct.unpack_from("!I", datagram, 1)[0]
    if _is_gquic(version) and _salt(version) is None:
        chlo = _plaintext_gquic(datagram, version)
        return [InitialPacket(version, b"", ((0, chlo),))] if chlo is not None else None
    if len(datagram) < MIN_INITIAL_DATAGRAM:
        return None
    out: list[InitialPacket] = []
    pos = 0
    for _ in range(_MAX_PACKETS_PER_DATAGRAM):
        if pos + 7 > len(datagram) or datagram[pos] & 0x80 == 0:
            break
        parsed = _one_packet(datagram, pos, original_dcid)
        if parsed is None:
            break
        packet, pos = parsed
        if packet is not None:
            out.append(packet)
    return out or None


def _one_packet(
    data: bytes, start: int, original_dcid: bytes | None
) -> tuple[InitialPacket | None, int] | None:
    """Open the long-header packet at `start`: (packet or None if not an Initial we read, end)."""
    first = data[start]
    version = struct.unpack_from("!I", data, start + 1)[0]
    if version == 0:
        return None  # version negotiation
    pos = start + 5
    dcid_len = data[pos]
    if dcid_len > _MAX_CID or pos + 1 + dcid_len >= len(data):
        return None
    dcid = data[pos + 1 : pos + 1 + dcid_len]
    pos += 1 + dcid_len
    scid_len = data[pos]
    if scid_len > _MAX_CID:
        return None
    pos += 1 + scid_len
    ptype = (first >> 4) & 0x3
    is_initial = ptype == _initial_type(version)
    if is_initial:
        token = _varint(data, pos)
        if token is None:
            return None
        pos = token[1] + token[0]
    length = _varint(data, pos)
    if length is None:
        return None
    pn_offset = length[1]
    end = pn_offset + length[0]
    if end > len(data) or length[0] < 20:
        return None
    if not is_initial or dcid_len == 0:
        return None, end
    plain = None
    for key_dcid in (dcid, original_dcid) if original_dcid not in (None, dcid) else (dcid,):
        assert key_dcid is not None
        keys = initial_keys(version, key_dcid)
        if keys is None:
            return None, end
        plain = _decrypt(data, start, pn_offset, end, keys)
        if plain is not None:
            dcid = key_dcid
            break
    if plain is None:
        return None, end
    crypto = _crypto_frames(plain, gquic=_is_gquic(version))
    if crypto is None:
        return None, end
    return InitialPacket(version, dcid, crypto), end


def _decrypt(data: bytes, start: int, pn_offset: int, end: int, keys: InitialKeys) -> bytes | None:
    sample = data[pn_offset + 4 : pn_offset + 20]
    if len(sample) < 16:
        return None
    mask = ecb_block(keys.hp, sample)
    first = data[start] ^ (mask[0] & 0x0F)
    pn_len = (first & 0x03) + 1
    if pn_offset + pn_len + 16 > end:
        return None
    pn_bytes = bytes(
        b ^ m for b, m in zip(data[pn_offset : pn_offset + pn_len], mask[1 : 1 + pn_len], strict=True)
    )
    header = bytes([first]) + data[start + 1 : pn_offset] + pn_bytes
    pn = int.from_bytes(pn_bytes, "big")
    nonce = (int.from_bytes(keys.iv, "big") ^ pn).to_bytes(12, "big")
    return gcm_decrypt(keys.key, nonce, data[pn_offset + pn_len : end], header)


def _crypto_frames(plain: bytes, gquic: bool) -> tuple[tuple[int, bytes], ...] | None:
    """CRYPTO frames of a decrypted Initial payload; None when the frames do not parse."""
    chunks: list[tuple[int, bytes]] = []
    pos = 0
    n = len(plain)
    crypto_type = 0x08 if gquic else 0x06  # Google's Q05x/T05x put the handshake in type 0x08
    for _ in range(_MAX_FRAMES):
        if pos >= n:
            break
        ftype = plain[pos]
        if ftype == 0x00:  # PADDING: runs of zero bytes
            while pos < n and plain[pos] == 0:
                pos += 1
            continue
        if ftype == 0x01:  # PING
            pos += 1
            continue
        if ftype in (0x02, 0x03):  # ACK, ACK with ECN counts
            skipped = _skip_ack(plain, pos + 1, ecn=ftype == 0x03)
            if skipped is None:
                return None
            pos = skipped
            continue
        if ftype == crypto_type:
            offset = _varint(plain, pos + 1)
            if offset is None:
                return None
            length = _varint(plain, offset[1])
            if length is None or length[1] + length[0] > n:
                return None
            chunks.append((offset[0], plain[length[1] : length[1] + length[0]]))
            pos = length[1] + length[0]
            continue
        break  # CONNECTION_CLOSE or anything else: what came before still counts
    return tuple(chunks) if chunks else None


def _skip_ack(data: bytes, pos: int, ecn: bool) -> int | None:
    fields = []
    for _ in range(4):  # largest acknowledged, delay, range count, first range
        v = _varint(data, pos)
        if v is None:
            return None
        fields.append(v[0])
        pos = v[1]
    if fields[2] > _MAX_ACK_RANGES:
        return None
    for _ in range(fields[2] * 2 + (3 if ecn else 0)):
        v = _varint(data, pos)
        if v is None:
            return None
        pos = v[1]
    return pos


# --- Google QUIC up to Q046: plaintext CHLO ------------------------------------------------


def _plaintext_gquic(data: bytes, version: int) -> bytes | None:
    """The CHLO message in a plaintext gQUIC client packet (Q024..Q046), or None."""
    try:
        digits = int(struct.pack("!I", version)[1:].decode("ascii"))
    except ValueError:
        return None
    first = data[0]
    if digits >= 46:  # Q046: IETF-like long header, DCID/SCID lengths as nibbles
        if data[5] != 0x50:
            return None
        pos = 6 + 8 + (first & 0x03) + 1
    else:  # public header: flags, 8-byte CID, version, packet number
        if first & 0x01 == 0 or first & 0x08 == 0:
            return None
        # 0x0C was the connection-ID length (both bits: 8 bytes) before 0x04 came to mean a
        # diversification nonce, which only servers send: a client packet never has one.
        pn_len = (1, 2, 4, 6)[(first >> 4) & 0x03]
        pos = 1 + 8 + 4 + pn_len
        if digits < 34:
            pos += 1  # private flags byte
    pos += 12  # NULL encryption's message hash
    return _gquic_stream_frame(data, pos, big_endian=digits >= 39)


def _gquic_stream_frame(data: bytes, pos: int, big_endian: bool) -> bytes | None:
    n = len(data)
    while pos < n and data[pos] == 0:
        pos += 1
    if pos >= n:
        return None
    ftype = data[pos]
    if ftype in (0x40, 0x60):  # an ACK before the stream frame (a repeated CHLO)
        pos += 6 if ftype == 0x40 else 9
        if pos >= n:
            return None
        ftype = data[pos]
    if ftype & 0x80 == 0:
        return None
    offset_len = (ftype >> 2) & 0x07
    offset_len = offset_len + 1 if offset_len else 0
    sid_len = (ftype & 0x03) + 1
    pos += 1
    if pos + sid_len + offset_len + 2 > n:
        return None
    if int.from_bytes(data[pos : pos + sid_len], "big" if big_endian else "little") != 1:
        return None  # the crypto stream is stream 1
    pos += sid_len + offset_len
    if ftype & 0x20:
        length = int.from_bytes(data[pos : pos + 2], "big" if big_endian else "little")
        pos += 2
    else:
        length = n - pos
    if pos + length > n:
        return None
    return data[pos : pos + length]


_TAG_ENTRY: Final = struct.Struct("<4sI")
_MAX_TAGS: Final = 64


def parse_chlo_sni(chlo: bytes) -> str | None:
    """The SNI tag of a gQUIC CHLO handshake message, or None."""
    if len(chlo) < 8 or chlo[:4] != b"CHLO":
        return None
    count = struct.unpack_from("<H", chlo, 4)[0]
    if count > _MAX_TAGS:
        return None
    values = 8 + 8 * count
    if values > len(chlo):
        return None
    prev = 0
    for i in range(count):
        tag, end = _TAG_ENTRY.unpack_from(chlo, 8 + 8 * i)
        if end < prev or values + end > len(chlo):
            return None
        if tag == b"SNI\x00":
            raw = chlo[values + prev : values + end]
            if raw and len(raw) <= 255 and all(0x21 <= b < 0x7F for b in raw):
                return raw.decode("ascii").lower().rstrip(".") or None
            return None
        prev = end
    return None


# --- CRYPTO reassembly -----------------------------------------------------------------------


@dataclass
class CryptoAssembler:
    """CRYPTO bytes of one client's Initial packets, reassembled by offset into a ClientHello.

    Holds at most `MAX_CRYPTO` bytes in at most `MAX_CHUNKS` chunks; out-of-order, duplicated
    and overlapping chunks are fine (the first copy of a byte wins).
    """

    started: float = 0.0
    dcid: bytes = b""  # the client's first DCID: its keys open every Initial of the handshake
    chunks: dict[int, bytes] = field(default_factory=dict)
    size: int = 0
    failed: bool = False
    done: bool = False

    def add(self, offset: int, data: bytes) -> ClientHello | str | None:
        """Add one chunk; the ClientHello (or a CHLO's SNI string) once complete, else None."""
        if self.failed or self.done or not data:
            return None
        if offset + len(data) > MAX_CRYPTO or len(self.chunks) >= MAX_CHUNKS:
            self.failed = True
            self.chunks.clear()
            return None
        if len(data) > len(self.chunks.get(offset, b"")):
            self.size += len(data) - len(self.chunks.get(offset, b""))
            self.chunks[offset] = data
        return self._try()

    def _contiguous(self) -> bytes:
        out = bytearray()
        for offset in sorted(self.chunks):
            if offset > len(out):
                break
            chunk = self.chunks[offset]
            if offset + len(chunk) > len(out):
                out += chunk[len(out) - offset :]
        return bytes(out)

    def _try(self) -> ClientHello | str | None:
        if 0 not in self.chunks:
            return None
        data = self._contiguous()
        if data[:4] == b"CHLO":
            sni = parse_chlo_sni(data)
            if sni is not None:
                self.done = True
                return sni
            return None
        if len(data) < 4:
            return None
        if data[0] != CLIENT_HELLO:
            self.failed = True
            return None
        need = 4 + ((data[1] << 16) | (data[2] << 8) | data[3])
        if need > MAX_CRYPTO:
            self.failed = True
            return None
        if len(data) < need:
            return None
        self.done = True
        self.chunks.clear()
        return parse_client_hello(data[:need])
