"""Archive listings without extraction: 7z headers read by hand, zstd tars by their first
bytes. The archives are written by the real tools (py7zr, zstandard, the zstd command)."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import py7zr
import pytest
import zstandard
from safetensors.numpy import save_file

from agent.modelfiles.model import Malformed
from agent.sensors.files.archives import list_archive, list_members
from agent.sensors.files.members import Member, identify_member, member_hash_job
from agent.sensors.files.sevenzip import MAX_PACKED_HEADER, MAX_UNPACKED_HEADER, SIGNATURE, list_7z
from agent.system.hashing import file_key
from tests.agent.test_modelfiles_formats import make_gguf


@pytest.fixture
def files(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "docs" / "empty_dir").mkdir(parents=True)
    make_gguf(src / "weights.bin", extra_tensor=20_000)
    (src / "docs" / "notes.txt").write_text("minutes\n" * 500)
    (src / "docs" / "zero.dat").write_bytes(b"")
    return src


def write_7z(target: Path, src: Path, *, encoded: bool, password: str | None = None) -> None:
    """py7zr's archive; its encoded header (the default) is LZMA2-packed, or AES-encrypted with a
    password (header_encryption)."""
    with py7zr.SevenZipFile(target, "w", password=password, header_encryption=password is not None) as z:
        z.set_encoded_header_mode(encoded)
        z.writeall(src, "export")


def py7zr_listing(archive: Path) -> dict[str, int]:
    """The real reader's view of an archive: its non-empty files and their sizes."""
    with py7zr.SevenZipFile(archive) as z:
        return {f.filename: f.uncompressed for f in z.list() if not f.is_directory and f.uncompressed}


def number_7z(n: int) -> bytes:
    """7z's variable-length number (7zFormat.txt, "UINT64")."""
    for extra in range(8):
        if n < 1 << (8 * extra + 7 - extra):
            first = (0xFF00 >> extra) & 0xFF | n >> (8 * extra)
            return bytes([first]) + (n & ((1 << 8 * extra) - 1)).to_bytes(extra, "little")
    return b"\xff" + n.to_bytes(8, "little")


def coder_7z(f: dict[str, int]) -> bytes:
    """One coder record for a raw LZMA filter (Methods.txt ids and property layouts)."""
    if f["id"] == lzma.FILTER_LZMA1:
        method = b"\x03\x01\x01"
        props = bytes([(f["pb"] * 5 + f["lp"]) * 9 + f["lc"]]) + f["dict_size"].to_bytes(4, "little")
    elif f["id"] == lzma.FILTER_DELTA:
        method, props = b"\x03", bytes([f["dist"] - 1])
    else:
        method, props = {lzma.FILTER_X86: b"\x03\x03\x01\x03"}[f["id"]], b""
    flags = len(method) | (0x20 if props else 0)
    return bytes([flags]) + method + (number_7z(len(props)) + props if props else b"")


def reencode_header(
    plain: bytes,
    filters: list[dict[str, int]],
    *,
    claimed_props: list[dict[str, int]] | None = None,
    unpacked: int | None = None,
    packed: bytes | None = None,
) -> bytes:
    """A plain-header archive with its header packed as 7-Zip packs it (kEncodedHeader: one folder,
    the filters as a chain of coders, the packed stream where the header was). The stdlib's raw
    encoder packs; the claims can be forged (properties, unpacked size, the packed bytes)."""
    offset, length = int.from_bytes(plain[12:20], "little"), int.from_bytes(plain[20:28], "little")
    header = plain[32 + offset : 32 + offset + length]
    if packed is None:
        packed = lzma.compress(header, format=lzma.FORMAT_RAW, filters=filters)
    coders = list(reversed(claimed_props or filters))  # 7-Zip's order: the packed stream's coder first
    folder = number_7z(len(coders)) + b"".join(coder_7z(f) for f in coders)
    folder += b"".join(number_7z(i + 1) + number_7z(i) for i in range(len(coders) - 1))  # in i+1 <- out i
    size = len(header) if unpacked is None else unpacked
    encoded = (
        b"\x17\x06" + number_7z(offset) + b"\x01\x09" + number_7z(len(packed)) + b"\x00"
        + b"\x07\x0b\x01\x00" + folder + b"\x0c" + number_7z(size) * len(coders)
        + b"\x0a\x01" + zlib.crc32(header).to_bytes(4, "little") + b"\x00\x00"
    )  # fmt: skip
    tail = (offset + len(packed)).to_bytes(8, "little") + len(encoded).to_bytes(8, "little")
    tail += zlib.crc32(encoded).to_bytes(4, "little")
    start = plain[:8] + zlib.crc32(tail).to_bytes(4, "little") + tail
    return start + plain[32 : 32 + offset] + packed + encoded


LZMA1 = {"id": lzma.FILTER_LZMA1, "lc": 3, "lp": 0, "pb": 2, "dict_size": 1 << 16}


def test_7z_plain_header_lists_every_file_with_its_size(tmp_path: Path, files: Path) -> None:
    archive = tmp_path / "a.7z"
    write_7z(archive, files, encoded=False)
    entries, how = list_archive(str(archive), archive.stat().st_size)
    assert how == "7z listing"
    listed = {name: size for name, size, _ in entries}
    assert listed["export/weights.bin"] == (files / "weights.bin").stat().st_size
    assert listed["export/docs/notes.txt"] == 4000
    assert {k: v for k, v in listed.items() if v} == py7zr_listing(archive)
    assert "export/docs/empty_dir" not in listed


def test_7z_default_lzma2_packed_header_is_listed(tmp_path: Path, files: Path) -> None:
    archive = tmp_path / "b.7z"
    write_7z(archive, files, encoded=True)  # py7zr's default
    tail = archive.read_bytes()[32 + int.from_bytes(archive.read_bytes()[12:20], "little") :]
    assert tail[0] == 0x17 and b"\x01\x21\x21" in tail  # kEncodedHeader: one coder, LZMA2 (21)
    entries, how = list_archive(str(archive), archive.stat().st_size)
    assert how == "7z listing"
    listed = {name: size for name, size, _ in entries if size}
    assert listed == py7zr_listing(archive)
    assert listed["export/weights.bin"] == (files / "weights.bin").stat().st_size


@pytest.mark.parametrize(
    "filters",
    [[LZMA1], [{"id": lzma.FILTER_X86}, LZMA1], [{"id": lzma.FILTER_DELTA, "dist": 4}, LZMA1]],
    ids=["LZMA", "BCJ+LZMA", "Delta+LZMA"],
)
def test_7z_lzma_packed_header_is_listed(filters: list[dict[str, int]], tmp_path: Path, files: Path) -> None:
    """7-Zip's own -mhc=on packs the header with LZMA (LZMA1); filters may come before it."""
    write_7z(tmp_path / "plain.7z", files, encoded=False)
    archive = tmp_path / "lzma.7z"
    archive.write_bytes(reencode_header((tmp_path / "plain.7z").read_bytes(), filters))
    expected = py7zr_listing(archive)  # the real reader accepts the packed header
    assert expected == py7zr_listing(tmp_path / "plain.7z")
    entries, how = list_archive(str(archive), archive.stat().st_size)
    assert how == "7z listing"
    assert {name: size for name, size, _ in entries if size} == expected


def test_7z_archives_of_the_7zip_command_are_listed(tmp_path: Path, files: Path) -> None:
    tool = shutil.which("7zz") or shutil.which("7z")
    if tool is None:
        pytest.skip("7-Zip (7zz or 7z) not installed")
    for name, options in [("default.7z", []), ("bcj.7z", ["-mf=BCJ"]), ("lzma2.7z", ["-m0=lzma2"])]:
        archive = tmp_path / name
        subprocess.run([tool, "a", "-bd", "-bso0", *options, str(archive), str(files)], check=True)
        entries, how = list_archive(str(archive), archive.stat().st_size)
        assert how == "7z listing", name
        assert {n: s for n, s, _ in entries if s} == py7zr_listing(archive), name
    hidden = tmp_path / "hidden.7z"
    subprocess.run([tool, "a", "-bd", "-bso0", "-psecret", "-mhe=on", str(hidden), str(files)], check=True)
    assert list_archive(str(hidden), hidden.stat().st_size) == (
        [],
        "7z archive with an encrypted header: not listed",
    )


def test_7z_encrypted_header_is_reported_not_listed(tmp_path: Path, files: Path) -> None:
    archive = tmp_path / "secret.7z"
    write_7z(archive, files, encoded=True, password="hunter2")
    with pytest.raises(py7zr.PasswordRequired):
        py7zr_listing(archive)  # not even the real reader lists it without the password
    assert list_archive(str(archive), archive.stat().st_size) == (
        [],
        "7z archive with an encrypted header: not listed",
    )


def test_7z_unknown_header_coder_is_reported_not_listed(tmp_path: Path, files: Path) -> None:
    write_7z(tmp_path / "plain.7z", files, encoded=False)
    data = reencode_header((tmp_path / "plain.7z").read_bytes(), [{"id": lzma.FILTER_X86}, LZMA1])
    data = data.replace(b"\x04\x03\x03\x01\x03", b"\x04\x04\x01\x08\x0c", 1)  # BCJ -> a JPEG coder id
    archive = tmp_path / "odd.7z"
    archive.write_bytes(data)
    assert list_archive(str(archive), len(data)) == (
        [],
        "7z archive with a header packed by coder 0401080c: not listed",
    )


def seven_zip(kind: str, tmp_path: Path, files: Path) -> bytes:
    """An archive with a plain header, py7zr's default LZMA2-packed one, or a BCJ+LZMA one."""
    write_7z(tmp_path / "w.7z", files, encoded=kind == "LZMA2")
    data = (tmp_path / "w.7z").read_bytes()
    return reencode_header(data, [{"id": lzma.FILTER_X86}, LZMA1]) if kind == "BCJ+LZMA" else data


@pytest.mark.parametrize("kind", ["plain", "LZMA2", "BCJ+LZMA"])
def test_7z_mutated_headers_never_raise(kind: str, tmp_path: Path, files: Path) -> None:
    """Bytes of the header, and of a packed header's streams info and packed stream, changed at
    random and the file cut short: every outcome is a verdict, none an exception."""
    good = seven_zip(kind, tmp_path, files)
    start, length = int.from_bytes(good[12:20], "little") + 32, int.from_bytes(good[20:28], "little")
    assert list_archive_bytes(good, tmp_path)[1] == "7z listing"
    rng = random.Random(13)
    outcomes = set()
    for _ in range(400):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            at = rng.choice([rng.randrange(12, 28), rng.randrange(max(32, start - 512), start + length)])
            data[at] = rng.randrange(256)
        entries, how = list_archive_bytes(
            bytes(data[: rng.choice([len(data), rng.randrange(32, len(data))])]), tmp_path
        )
        assert len(entries) <= 1024
        outcomes.add(how)
    assert "unreadable archive" in outcomes  # the mutations did reach the parser's checks


def list_archive_bytes(data: bytes, tmp_path: Path) -> tuple[list[tuple[str, int, bytes]], str]:
    bad = tmp_path / "bad.7z"
    bad.write_bytes(data)
    return list_archive(str(bad), len(data))  # must not raise


class RecordedReads:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads: list[tuple[int, int]] = []

    def __call__(self, offset: int, n: int) -> bytes:
        self.reads.append((offset, n))
        return self.data[offset : offset + n]


@pytest.mark.parametrize("claim", ["unpacked", "packed"])
def test_7z_packed_header_bounds_are_checked_before_decoding(claim: str, tmp_path: Path, files: Path) -> None:
    """A packed header claiming more than 16 MiB unpacked or 4 MiB packed is refused; the packed
    bytes are not even read."""
    write_7z(tmp_path / "plain.7z", files, encoded=False)
    plain = (tmp_path / "plain.7z").read_bytes()
    if claim == "unpacked":
        data = reencode_header(plain, [LZMA1], unpacked=MAX_UNPACKED_HEADER + 1)
    else:
        data = reencode_header(plain, [LZMA1], packed=os.urandom(MAX_PACKED_HEADER + 1))
    read = RecordedReads(data)
    with pytest.raises(Malformed, match="over the bounds"):
        list_7z(read, len(data))
    assert len(read.reads) == 2  # the signature header and the streams info, nothing packed


def test_7z_packed_header_decodes_no_further_than_its_claim(tmp_path: Path, files: Path) -> None:
    """A packed stream that would inflate to 256 MiB past the header is decoded up to the header's
    claimed size and no further: the archive is listed and the memory stays small."""
    write_7z(tmp_path / "plain.7z", files, encoded=False)
    plain = (tmp_path / "plain.7z").read_bytes()
    header_at = 32 + int.from_bytes(plain[12:20], "little")
    bomb = lzma.LZMACompressor(format=lzma.FORMAT_RAW, filters=[LZMA1])
    packed = bomb.compress(plain[header_at:])
    zeros = bytes(1 << 20)
    packed += b"".join(bomb.compress(zeros) for _ in range(256)) + bomb.flush()
    data = reencode_header(plain, [LZMA1], packed=packed)
    assert len(data) < 1 << 20
    tracemalloc.start()
    try:
        listed = list_7z(RecordedReads(data), len(data))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert {name: size for name, size in listed if size} == py7zr_listing(tmp_path / "plain.7z")
    assert peak < 4 << 20


def test_7z_declared_dictionary_is_not_allocated(tmp_path: Path, files: Path) -> None:
    """LZMA properties declaring a 4 GiB dictionary: the decoder is given one no larger than the
    header, so the listing succeeds in a process whose address space has 1 GiB to spare."""
    write_7z(tmp_path / "plain.7z", files, encoded=False)
    archive = tmp_path / "huge-dict.7z"
    claimed = {**LZMA1, "dict_size": 0xFFFF_FFFF}
    archive.write_bytes(
        reencode_header((tmp_path / "plain.7z").read_bytes(), [LZMA1], claimed_props=[claimed])
    )
    child = (
        "import os, resource, sys\n"
        "from agent.sensors.files.archives import list_archive\n"
        "vm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmSize:'))\n"
        "limit = vm * 1024 + (1 << 30)\n"
        "resource.setrlimit(resource.RLIMIT_AS, (limit, limit))\n"
        "print(list_archive(sys.argv[1], os.path.getsize(sys.argv[1]))[1])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", child, str(archive)], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout.strip()) == (0, "7z listing"), done.stderr


def test_7z_header_size_is_bounded() -> None:
    """A header claimed larger than the bound is refused before anything is read for it."""
    head = (
        SIGNATURE
        + b"\x00\x04"
        + b"\0" * 4
        + (0).to_bytes(8, "little")
        + (64 << 20).to_bytes(8, "little")
        + b"\0" * 4
    )
    reads: list[tuple[int, int]] = []

    def read(offset: int, n: int) -> bytes:
        reads.append((offset, n))
        return head[offset : offset + n]

    with pytest.raises(Malformed, match=r"over the \d+-byte bound"):
        list_7z(read, 100 << 20)  # a file large enough to hold the claimed header
    assert reads == [(0, 32)]


@pytest.mark.parametrize("tool", ["zstandard", "zstd command"])
def test_zstd_tar_lists_its_first_entries(tool: str, tmp_path: Path, files: Path) -> None:
    archive = tmp_path / "m.tar.zst"
    if tool == "zstandard":
        plain = io.BytesIO()
        with tarfile.open(fileobj=plain, mode="w") as t:
            t.add(files / "weights.bin", "export/weights.bin")
            t.add(files / "docs" / "notes.txt", "export/notes.txt")
        archive.write_bytes(zstandard.ZstdCompressor(level=19).compress(plain.getvalue()))
    else:
        if shutil.which("tar") is None or shutil.which("zstd") is None:
            pytest.skip("tar or zstd not installed")
        subprocess.run(["tar", "--zstd", "-cf", str(archive), "-C", str(files), "weights.bin"], check=True)
    entries, how = list_archive(str(archive), archive.stat().st_size)
    assert how == "first entries of a zstd stream"
    name, size, peek = entries[0]
    assert name.endswith("weights.bin") and size == (files / "weights.bin").stat().st_size
    assert peek[:4] == b"GGUF"


def test_zstd_bomb_inflates_a_bounded_front(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.tar.zst"
    with bomb.open("wb") as out, zstandard.ZstdCompressor(level=3).stream_writer(out) as w:
        plain = io.BytesIO()
        info = tarfile.TarInfo("zeros.bin")
        info.size = 512 << 20
        plain.write(info.tobuf())
        w.write(plain.getvalue())
        chunk = b"\0" * (1 << 20)
        for _ in range(512):  # 512 MiB of zeros, a few kB on disk
            w.write(chunk)
    assert os.path.getsize(bomb) < 1 << 20
    entries, how = list_archive(str(bomb), bomb.stat().st_size)
    assert entries == [("zeros.bin", 512 << 20, b"\0" * 16)] and how == "first entries of a zstd stream"


def test_zstd_window_beyond_the_bound_is_refused(tmp_path: Path) -> None:
    data = os.urandom(1 << 16) * 400  # 25 MiB with repeats 64 KiB apart: a long window helps
    params = zstandard.ZstdCompressionParameters.from_level(19, window_log=27)
    archive = tmp_path / "long.tar.zst"
    archive.write_bytes(zstandard.ZstdCompressor(compression_params=params).compress(data))
    entries, how = list_archive(str(archive), archive.stat().st_size)
    assert (entries, how) == ([], "unreadable archive")


# --- entries read in place: content and hash of what was packed ---------------------------------


def pack(kind: str, target: Path, files: dict[str, Path]) -> Path:
    """An archive as the standard library (or the zstd tool's library) writes it."""
    if kind.startswith("zip"):
        method = zipfile.ZIP_STORED if kind == "zip-stored" else zipfile.ZIP_DEFLATED
        with zipfile.ZipFile(target, "w", method) as z:
            for name, path in files.items():
                z.write(path, name)
        return target
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w") as t:
        for name, path in files.items():
            t.add(path, name)
    data = plain.getvalue()
    if kind == "tar.gz":
        data = gzip.compress(data)
    elif kind == "tar.xz":
        data = lzma.compress(data)
    elif kind == "tar.bz2":
        data = bz2.compress(data)
    elif kind == "tar.zst":
        data = zstandard.ZstdCompressor(level=3).compress(data)
    target.write_bytes(data)
    return target


def hash_member(path: Path, member: Member) -> tuple[str, str, int]:
    """(sha256, error, largest step) of a member's hash job, run to the end."""
    job = member_hash_job(str(path), file_key(path.stat()), member)
    largest = 0
    while not job.done:
        largest = max(largest, job.step(1 << 20))
    return job.sha256, job.error, largest


ENTRY_KINDS = ["zip-stored", "zip", "tar", "tar.gz", "tar.xz", "tar.bz2", "tar.zst"]


@pytest.mark.parametrize("kind", ENTRY_KINDS)
def test_entry_is_identified_and_hashed_in_place(kind: str, tmp_path: Path, files: Path) -> None:
    """Whatever the archive, the entry's own header says GGUF and its hash is the SHA-256 of the
    file that was packed; the text beside it is not weights. Nothing is written to disk."""
    weights = files / "weights.bin"
    archive = pack(
        kind, tmp_path / f"a.{kind}", {"docs/notes.txt": files / "docs" / "notes.txt", "w/model.bin": weights}
    )
    before = set(os.listdir(tmp_path))
    members, _ = list_members(str(archive), archive.stat().st_size)
    by_name = {m.name: m for m in members}
    model = by_name["w/model.bin"]
    assert model.access == {"zip-stored": "stored", "zip": "deflate", "tar": "stored"}.get(kind, "stream")
    verdict = identify_member(str(archive), model)
    assert verdict.is_model and verdict.info is not None and verdict.info.format == "gguf"
    assert identify_member(str(archive), by_name["docs/notes.txt"]).verdict == "not_model"
    sha, error, largest = hash_member(archive, model)
    assert (sha, error) == (hashlib.sha256(weights.read_bytes()).hexdigest(), "")
    assert largest <= 1 << 20  # one bounded step at a time, within the hashing budget
    assert set(os.listdir(tmp_path)) == before


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_long_header_of_a_compressed_entry_is_read_past_the_first_read(kind: str, tmp_path: Path) -> None:
    """A safetensors checkpoint of 3,000 tensors: its JSON header alone is longer than the first
    64 KiB inflated, so the entry is inflated further (within the 16 MiB header bound) to tell."""
    tensors = {f"model.layers.{i}.mlp.weight": np.zeros(128, np.float32) for i in range(3000)}
    weights = tmp_path / "many.safetensors"
    save_file(tensors, str(weights))
    assert int.from_bytes(weights.read_bytes()[:8], "little") > 64 << 10
    archive = pack(kind, tmp_path / f"v.{kind}", {"many.safetensors": weights})
    (member,) = list_members(str(archive), archive.stat().st_size)[0]
    verdict = identify_member(str(archive), member)
    assert verdict.is_model and verdict.info is not None and verdict.info.format == "safetensors"
    assert 64 << 10 < verdict.bytes_read <= 16 << 20


def test_entry_hash_of_a_bomb_is_bounded_and_exact(tmp_path: Path) -> None:
    """64 MiB of zeros deflated into a few hundred kB: hashed step by step, each step's output
    bounded, memory flat, and the hash is that of the 64 MiB."""
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z, z.open("zeros.bin", "w") as f:
        for _ in range(64):
            f.write(bytes(1 << 20))
    (member,) = list_members(str(bomb), bomb.stat().st_size)[0]
    tracemalloc.start()
    try:
        sha, error, largest = hash_member(bomb, member)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    expected = hashlib.sha256()
    for _ in range(64):
        expected.update(bytes(1 << 20))
    assert (sha, error) == (expected.hexdigest(), "") and largest <= 1 << 20
    assert peak < 8 << 20


def test_entry_that_lies_about_its_size_gives_no_hash(tmp_path: Path, files: Path) -> None:
    """A compressed tar whose header claims more bytes than the stream holds: no hash, a reason."""
    archive = pack("tar.gz", tmp_path / "cut.tar.gz", {"w.bin": files / "weights.bin"})
    (member,) = list_members(str(archive), archive.stat().st_size)[0]
    liar = Member(
        member.name, member.size + (1 << 20), member.peek, member.access, member.offset, codec="gzip"
    )
    sha, error, _ = hash_member(archive, liar)
    assert sha == "" and "ended before" in error


def test_entry_hash_of_an_archive_changed_meanwhile_is_dropped(tmp_path: Path, files: Path) -> None:
    archive = pack("zip", tmp_path / "c.zip", {"w.bin": files / "weights.bin"})
    (member,) = list_members(str(archive), archive.stat().st_size)[0]
    job = member_hash_job(str(archive), file_key(archive.stat()), member)
    job.step(4096)
    with archive.open("ab") as f:
        f.write(b"more")
    while not job.done:
        job.step(1 << 20)
    assert job.sha256 == "" and "changed" in job.error


def test_7z_entries_are_listed_but_never_read(tmp_path: Path, files: Path) -> None:
    archive = tmp_path / "s.7z"
    write_7z(archive, files, encoded=True)
    members, how = list_members(str(archive), archive.stat().st_size)
    weights = next(m for m in members if m.name.endswith("weights.bin"))
    assert (how, weights.access) == ("7z listing", "")
    assert identify_member(str(archive), weights).reason == "content not readable in this archive"


@pytest.mark.parametrize("kind", ["zip", "zip-stored", "tar", "tar.gz", "tar.xz", "tar.bz2", "tar.zst"])
def test_mutated_archives_never_raise_while_entries_are_read(kind: str, tmp_path: Path, files: Path) -> None:
    """Bytes of an archive changed at random and the file cut short: listing, identifying and
    hashing its entries end in a verdict or an error string, never an exception."""
    good = pack(kind, tmp_path / f"g.{kind}", {"w/model.bin": files / "weights.bin"}).read_bytes()
    rng = random.Random(29)
    bad = tmp_path / "bad"
    hashed = 0
    for _ in range(60):
        data = bytearray(good)
        for _ in range(rng.randint(0, 6)):  # none at times: a cut alone (a copy still running)
            data[rng.randrange(len(data))] = rng.randrange(256)
        bad.write_bytes(bytes(data[: rng.choice([len(data), rng.randrange(1, len(data))])]))
        members, _ = list_members(str(bad), bad.stat().st_size)
        for member in members[:4]:
            identify_member(str(bad), member)
            sha, error, largest = hash_member(bad, member)
            assert largest <= 1 << 20 and (sha == "") == bool(error)
            hashed += 1
    assert hashed  # the mutations left some archives listable, so entries were read
