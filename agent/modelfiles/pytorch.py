"""PyTorch checkpoints: the torch.save zip layout and the legacy pickle stream.

Nothing here unpickles, and nothing decompresses. The zip layout is recognised from the entry
names alone (`<archive>/data.pkl` and `<archive>/data/<n>` storage records); the legacy format
from the bytes of its first pickled object, torch's magic number. A checkpoint whose pickle
would have to run to say more (dtypes, shapes) says only what the listing shows: how many
storages and how many bytes they hold.
"""

from __future__ import annotations

import re
from typing import Final

from agent.modelfiles.model import NotModel, Parsed, human_count
from agent.modelfiles.ziplist import ZipListing

__all__ = ["LEGACY_MAGIC", "classify_torch_zip", "is_legacy_torch", "parse_legacy_torch"]

#: pickle protocol 2 (80 02), LONG1 of 10 bytes (8a 0a): torch's MAGIC_NUMBER 0x1950a86a20f9469cfc6c,
#: then STOP. Protocol 2 is what torch's legacy writer uses.
LEGACY_MAGIC: Final = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little") + b"."
#: The next object: the protocol version, 1001 (BININT2 e9 03), then STOP.
_LEGACY_PROTOCOL: Final = b"\x80\x02M\xe9\x03."
_STORAGE_RE: Final = re.compile(r"(.+?)/data/(\d+)")


def classify_torch_zip(listing: ZipListing) -> Parsed | None:
    """A Parsed for a torch.save archive, None when the listing is not one."""
    prefixes = {e.name[: -len("/data.pkl")] for e in listing.entries if e.name.endswith("/data.pkl")}
    prefixes = {p for p in prefixes if p and "/" not in p}
    if not prefixes:
        return None
    prefix = sorted(prefixes)[0]
    names = {e.name for e in listing.entries}
    storages = 0
    storage_bytes = 0
    for e in listing.entries:
        m = _STORAGE_RE.fullmatch(e.name)
        if m and m.group(1) == prefix:
            storages += 1
            storage_bytes += e.size
    markers = sum(f"{prefix}/{n}" in names for n in ("version", "byteorder", ".format_version"))
    if not storages and listing.from_central_directory:
        if markers:
            raise NotModel("pytorch", "torch.save archive without tensor data (no storages)")
        return None
    torchscript = f"{prefix}/constants.pkl" in names or any(n.startswith(f"{prefix}/code/") for n in names)
    extra: dict[str, str] = {"storages": str(storages), "storage_bytes": str(storage_bytes)}
    if torchscript:
        extra["torchscript"] = "yes"
    if not listing.complete:
        extra["listing"] = f"partial: {len(listing.entries)} of {listing.total} entries"
    bits = f"{storages} storages, {human_count(storage_bytes)} bytes of tensor data"
    if not listing.from_central_directory:
        bits = "storage count unknown (only the front of the archive was given)"
    return Parsed(
        format="pytorch",
        summary=f"PyTorch {'TorchScript' if torchscript else 'torch.save'} archive, {bits}",
        consistent=listing.complete and storages > 0 and markers > 0,
        tensor_count=storages if listing.from_central_directory else None,
        extra=extra,
    )


def is_legacy_torch(head: bytes) -> bool:
    return head.startswith(LEGACY_MAGIC)


def parse_legacy_torch(head: bytes, size: int) -> Parsed:
    consistent = head[len(LEGACY_MAGIC) :].startswith(_LEGACY_PROTOCOL)
    return Parsed(
        format="pytorch-legacy",
        summary="PyTorch legacy (pre-1.6) pickle checkpoint, torch magic number"
        + ("" if consistent else ", unexpected protocol version"),
        consistent=consistent,
        extra={"pickle": "not read"},
    )
