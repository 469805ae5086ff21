"""Archive listings without extraction: 7z headers read by hand, zstd tars by their first
bytes. The archives are written by the real tools (py7zr, zstandard, the zstd command)."""

from __future__ import annotations

import io
import os
import random
import shutil
import subprocess
import tarfile
from pathlib import Path

import py7zr
import pytest
import zstandard

from agent.modelfiles.model import Malformed
from agent.sensors.files.archives import list_archive
from agent.sensors.files.sevenzip import SIGNATURE, list_7z
from tests.agent.test_modelfiles_formats import make_gguf


@pytest.fixture
def files(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "docs" / "empty_dir").mkdir(parents=True)
    make_gguf(src / "weights.bin", extra_tensor=20_000)
    (src / "docs" / "notes.txt").write_text("minutes\n" * 500)
    (src / "docs" / "zero.dat").write_bytes(b"")
    return src


def write_7z(target: Path, src: Path, *, encoded: bool) -> None:
    with py7zr.SevenZipFile(target, "w") as z:
        z.set_encoded_header_mode(encoded)
        z.writeall(src, "export")


def test_7z_plain_header_lists_every_file_with_its_size(tmp_path: Path, files: Path) -> None:
    archive = tmp_path / "a.7z"
    write_7z(archive, files, encoded=False)
    entries, how = list_archive(str(archive), archive.stat().st_size)
    assert how == "7z listing"
    listed = {name: size for name, size, _ in entries}
    with py7zr.SevenZipFile(archive) as z:  # the real reader's view of the same archive
        expected = {f.filename: f.uncompressed for f in z.list() if not f.is_directory}
    assert listed["export/weights.bin"] == (files / "weights.bin").stat().st_size
    assert listed["export/docs/notes.txt"] == 4000
    assert {k: v for k, v in listed.items() if v} == {k: v for k, v in expected.items() if v}
    assert "export/docs/empty_dir" not in listed


def test_7z_compressed_header_is_reported_not_listed(tmp_path: Path, files: Path) -> None:
    archive = tmp_path / "b.7z"
    write_7z(archive, files, encoded=True)
    assert list_archive(str(archive), archive.stat().st_size) == (
        [],
        "7z archive with a compressed header: not listed",
    )


def test_7z_mutated_headers_never_raise(tmp_path: Path, files: Path) -> None:
    archive = tmp_path / "c.7z"
    write_7z(archive, files, encoded=False)
    good = archive.read_bytes()
    start, length = int.from_bytes(good[12:20], "little") + 32, int.from_bytes(good[20:28], "little")
    rng = random.Random(13)
    outcomes = set()
    for _ in range(400):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            at = rng.choice([rng.randrange(12, 28), rng.randrange(start, start + length)])
            data[at] = rng.randrange(256)
        bad = tmp_path / "bad.7z"
        bad.write_bytes(bytes(data[: rng.choice([len(data), rng.randrange(32, len(data))])]))
        entries, how = list_archive(str(bad), bad.stat().st_size)  # must not raise
        assert len(entries) <= 1024
        outcomes.add(how)
    assert "unreadable archive" in outcomes  # the mutations did reach the parser's checks


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
