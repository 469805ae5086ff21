"""The file sensor on the real OS: real model files written by their own libraries, real copies
onto really mounted file systems, real archives, a real child process downloading slowly.

Each test builds a home directory in a temp dir, starts a FileSensor on it (its media prefix is
a temp dir too, so the real /media is never touched), and runs the sensor's observations
through the real detectors, policy and tracker.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from umbra.v1 import finding_pb2 as fpb

from agent.catalog.locations import LocationCatalog, default_location_catalog
from agent.delivery.tracker import FindingTracker
from agent.detection.artifacts import ArtifactDetector
from agent.detection.finetune import FineTuningDetector
from agent.pipeline import Pipeline
from agent.policy.rules import Policy
from agent.sensors.base import SensorState
from agent.sensors.files.archives import list_archive
from agent.sensors.files.sensor import FileSensor
from tests.agent.test_modelfiles_formats import make_gguf, make_onnx, make_safetensors

#: Tensor elements that make a test model real-size (4.4 MB, 1.1M parameters): above the default
#: significance floors (1 MB, 1M parameters), so its findings keep their severity.
REAL = 1_100_000

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="inotify, /proc and mounts: Linux")
ROOT = os.geteuid() == 0


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def home_only_catalog() -> LocationCatalog:
    """The packaged catalog with only its home-relative paths (no $HF_HOME, no /usr/share/ollama)."""
    cat = default_location_catalog()
    locations = tuple(
        replace(loc, paths=tuple(p for p in loc.paths if p.startswith("~/"))) for loc in cat.locations
    )
    return LocationCatalog(tuple(loc for loc in locations if loc.paths), cat.sync_folders, cat.media_prefixes)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home" / "alice"
    for d in ("Downloads", "Dropbox", "Documents", ".cache/huggingface/hub"):
        (home / d).mkdir(parents=True)
    return home


class Harness:
    def __init__(self, sensor: FileSensor, policy: Policy) -> None:
        self.sensor = sensor
        self.pipeline = Pipeline(
            [sensor], [ArtifactDetector(), FineTuningDetector()], policy, FindingTracker("test-host")
        )
        self.findings: list[fpb.Finding] = []

    def wait_for(self, check: Callable[[fpb.Finding], bool], timeout: float = 20.0) -> fpb.Finding:
        deadline = time.monotonic() + timeout
        while True:
            for finding in self.findings:
                if check(finding):
                    return finding
            if time.monotonic() > deadline:
                summary = "\n".join(f"{fpb.FindingKind.Name(f.kind)} {f.summary}" for f in self.findings)
                raise AssertionError(f"no such finding within {timeout} s; got:\n{summary}")
            self.findings.extend(self.pipeline.poll())
            time.sleep(0.05)

    def wait_watched(self, path: Path, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while str(path) not in self.sensor.watched():
            assert time.monotonic() < deadline, f"{path} never watched: {self.sensor.watched()}"
            time.sleep(0.05)


@pytest.fixture
def start(tmp_path: Path, home: Path) -> Iterator[Callable[..., Harness]]:
    started: list[FileSensor] = []

    def _start(policy: Policy | None = None, **kwargs: object) -> Harness:
        options: dict[str, object] = {
            "state_path": tmp_path / "state" / "files.db",
            "homes": [str(home)],
            "media_prefixes": [str(tmp_path / "media")],
            "catalog": home_only_catalog(),
            "settle_seconds": 0.3,
            "files_per_second": 100_000,
            "read_bytes_per_second": 256 * 2**20,
            "hash_bytes_per_second": 256 * 2**20,
        }
        options.update(kwargs)
        sensor = FileSensor(**options)  # type: ignore[arg-type]
        started.append(sensor)
        sensor.start()
        assert sensor.first_scan_done.wait(20), "first scan did not finish"
        return Harness(sensor, policy or Policy())

    yield _start
    for sensor in started:
        sensor.stop()


def kind(k: int) -> Callable[[fpb.Finding], bool]:
    return lambda f: f.kind == k


def transfer(f: fpb.Finding) -> fpb.TransferEvidence:
    return next(e.transfer for e in f.evidence if e.WhichOneof("detail") == "transfer")


def model_file(f: fpb.Finding) -> fpb.ModelFileEvidence:
    return next(e.model_file for e in f.evidence if e.WhichOneof("detail") == "model_file")


# --- inventory ---------------------------------------------------------------------------------


def test_inventory_finds_real_models_under_innocent_names(home: Path, start: Callable[..., Harness]) -> None:
    gguf_path, gguf_params = make_gguf(home / "Documents" / "quarterly_report.pdf", extra_tensor=REAL)
    st_path, st_params = make_safetensors(home / "Downloads" / "notes.dat")
    onnx_path, _ = make_onnx(home / "Documents" / "README")
    (home / "Documents" / "fake.bin").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\0" * 192)  # 200 bytes: noise
    (home / "Documents" / "big.txt").write_text("hello\n" * 10_000)
    h = start()
    found = {f.evidence[0].model_file.path: f for f in (h.wait_for(kind(fpb.KIND_MODEL_ARTIFACT)),)}
    deadline = time.monotonic() + 20
    while len(found) < 3 and time.monotonic() < deadline:
        h.findings.extend(h.pipeline.poll())
        found = {model_file(f).path: f for f in h.findings if f.kind == fpb.KIND_MODEL_ARTIFACT}
        time.sleep(0.05)
    assert set(found) == {str(gguf_path), str(st_path), str(onnx_path)}
    g = model_file(found[str(gguf_path)])
    assert (g.format, g.architecture, g.parameter_count, g.sha256) == (
        "gguf",
        "llama",
        gguf_params,
        sha(gguf_path),
    )
    assert g.model_name == "Umbra Tiny Llama"
    assert model_file(found[str(st_path)]).parameter_count == st_params
    assert found[str(gguf_path)].severity == fpb.SEVERITY_LOW
    assert not found[str(gguf_path)].policy.approved
    inventory = {m.path: m for m in h.sensor.inventory()}
    assert set(inventory) == set(found)
    assert inventory[str(st_path)].sha256 == sha(st_path)
    assert h.sensor.status().state is SensorState.ACTIVE


def test_pushed_watched_paths_are_scanned_and_watched_then_dropped(
    tmp_path: Path, start: Callable[..., Harness]
) -> None:
    """A policy's watched_paths (pushed by the collector) join the running sensor's roots: the
    directory is scanned and watched at once, and unwatched when a newer policy leaves it out."""
    shared = tmp_path / "srv" / "team-share"
    shared.mkdir(parents=True)
    existing, _ = make_gguf(shared / "weights.bin")
    h = start(scan_homes=False)
    assert str(shared) not in h.sensor.watched()
    h.pipeline.apply_policy(Policy(version=4, watched_paths=(str(shared),)))
    found = h.wait_for(kind(fpb.KIND_MODEL_ARTIFACT))
    assert model_file(found).path == str(existing), "scanned without waiting for the daily rescan"
    assert str(shared) in h.sensor.watched()
    later, _ = make_gguf(shared / "later.bin")  # seen by its inotify watch, not by a scan
    h.wait_for(lambda f: f.kind == fpb.KIND_MODEL_ARTIFACT and model_file(f).path == str(later))
    h.pipeline.apply_policy(Policy(version=5))
    deadline = time.monotonic() + 10
    while str(shared) in h.sensor.watched() and time.monotonic() < deadline:
        h.pipeline.poll()
        time.sleep(0.05)
    assert str(shared) not in h.sensor.watched()


def test_restart_rehashes_nothing(home: Path, start: Callable[..., Harness]) -> None:
    make_gguf(home / "Documents" / "a.gguf")
    first = start()
    first.wait_for(kind(fpb.KIND_MODEL_ARTIFACT))
    assert first.sensor.hashed_bytes > 0
    first.sensor.stop()
    second = start()
    f = second.wait_for(kind(fpb.KIND_MODEL_ARTIFACT))
    assert model_file(f).sha256 == sha(home / "Documents" / "a.gguf")
    assert second.sensor.hashed_bytes == 0


def test_approved_hash_and_approved_directory(home: Path, start: Callable[..., Harness]) -> None:
    approved_model, _ = make_gguf(home / "Documents" / "approved.gguf")
    (home / "Downloads" / "team").mkdir()
    make_safetensors(home / "Downloads" / "team" / "model.safetensors")
    other, _ = make_onnx(home / "Documents" / "other.onnx")
    policy = Policy(
        approved_model_hashes=frozenset({sha(approved_model)}),
        approved_paths=(str(home / "Downloads" / "team"),),
    )
    h = start(policy)
    by_hash = h.wait_for(
        lambda f: f.kind == fpb.KIND_MODEL_ARTIFACT and model_file(f).path == str(approved_model)
    )
    assert by_hash.policy.approved and by_hash.policy.rule == f"approved_model_hashes:{sha(approved_model)}"
    assert by_hash.severity == fpb.SEVERITY_INFO
    by_dir = h.wait_for(lambda f: f.kind == fpb.KIND_MODEL_ARTIFACT and "/team/" in model_file(f).path)
    assert by_dir.policy.approved and by_dir.policy.rule == f"approved_paths:{home / 'Downloads' / 'team'}"
    assert by_dir.severity == fpb.SEVERITY_INFO
    unapproved = h.wait_for(lambda f: f.kind == fpb.KIND_MODEL_ARTIFACT and model_file(f).path == str(other))
    assert not unapproved.policy.approved and unapproved.policy.rule == "default:unapproved"


# --- exfiltration ------------------------------------------------------------------------------

#: A packer or copier as a person runs one: it holds its source open while it writes the result
#: slowly (a real multi-gigabyte copy takes seconds), which is how the sensor knows the source.
#: argv: kind (copy, zip, zip-stored, tar, tar.gz, tar.zst, 7z, 7z-plain, 7z-secret), source, target,
#: entry name.
SLOW_PACKER = textwrap.dedent(
    """
    import io, os, sys, tarfile, time, zipfile
    kind, source, target, entry = sys.argv[1:5]
    held = open(source, "rb")
    buf = io.BytesIO()
    if kind == "copy":
        buf.write(held.read())
    elif kind.startswith("zip"):
        method = zipfile.ZIP_STORED if kind == "zip-stored" else zipfile.ZIP_DEFLATED
        with zipfile.ZipFile(buf, "w", method) as z:
            z.write(source, entry)
    elif kind.startswith("7z"):
        import py7zr
        secret = "hunter2" if kind == "7z-secret" else None
        with py7zr.SevenZipFile(buf, "w", password=secret, header_encryption=secret is not None) as z:
            z.set_encoded_header_mode(kind != "7z-plain")
            z.write(source, entry)
    else:
        plain = io.BytesIO()
        with tarfile.open(fileobj=plain, mode="w") as t:
            t.add(source, entry)
        if kind == "tar.gz":
            import gzip
            buf.write(gzip.compress(plain.getvalue()))
        elif kind == "tar.zst":
            import zstandard
            buf.write(zstandard.ZstdCompressor(level=3).compress(plain.getvalue()))
        else:
            buf.write(plain.getvalue())
    data = buf.getvalue()
    with open(target, "wb") as out:
        step = max(1, len(data) // 10)
        for i in range(0, len(data), step):
            out.write(data[i : i + step]); out.flush(); time.sleep(0.15)
    time.sleep(0.3)
    held.close()
    """
)


def slow_pack(kind_: str, source: Path, target: Path, entry: str = "") -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", SLOW_PACKER, kind_, str(source), str(target), entry])


def _mount(kind_: str, target: Path, tmp: Path) -> None:
    target.mkdir(parents=True)
    if kind_ == "tmpfs":
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "umbra-usb", str(target)], check=True)
    else:
        image = tmp / "usb.img"
        with open(image, "wb") as f:
            f.truncate(8 * 2**20)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
        subprocess.run(["mount", "-o", "loop", str(image), str(target)], check=True)


@pytest.mark.skipif(not ROOT, reason="mounting needs root")
@pytest.mark.parametrize("fs", ["tmpfs", "ext4"])
def test_copy_to_removable_media(fs: str, tmp_path: Path, home: Path, start: Callable[..., Harness]) -> None:
    if fs == "ext4" and shutil.which("mkfs.ext4") is None:
        pytest.skip("mkfs.ext4 not installed")
    source, _ = make_gguf(home / "Documents" / "llama.gguf", extra_tensor=REAL)
    h = start()
    h.wait_for(kind(fpb.KIND_MODEL_ARTIFACT))
    usb = tmp_path / "media" / "alice" / "USB"
    try:
        _mount(fs, usb, tmp_path)
        h.wait_watched(usb)
        child = slow_pack("copy", source, usb / "holiday_photos.dat")
        f = h.wait_for(kind(fpb.KIND_MODEL_EXFILTRATION))
        child.wait(timeout=30)
    finally:
        subprocess.run(["umount", "-l", str(usb)], check=False, capture_output=True)
    t = transfer(f)
    assert (t.destination_kind, t.sha256, t.source_path) == ("removable_media", sha(source), str(source))
    assert (t.identified_by, t.source_known_by) == ("content", "writer")  # the copier held it open
    assert t.destination == str(usb / "holiday_photos.dat") and t.size_bytes == source.stat().st_size
    assert f.severity == fpb.SEVERITY_CRITICAL and not f.policy.approved and f.process.pid == child.pid


@pytest.mark.skipif(not ROOT, reason="mounting needs root")
def test_removable_media_is_inventoried_when_mounted(
    tmp_path: Path, home: Path, start: Callable[..., Harness]
) -> None:
    """A stick that arrives with weights on it: walked when mounted, with no file event at all;
    its models are forgotten when it goes."""
    stick = tmp_path / "stick"
    if shutil.which("mkfs.ext4") is not None:  # a real file system, filled before it is plugged in
        staging = tmp_path / "staging"
        _mount("ext4", staging, tmp_path)
        try:
            (staging / "backup").mkdir()
            carried, _ = make_gguf(staging / "backup" / "q3.bin", extra_tensor=REAL)
        finally:
            subprocess.run(["umount", str(staging)], check=True)
        device = ["-o", "loop", str(tmp_path / "usb.img")]
    else:  # a bind mount of a filled folder: the same event for the sensor
        (stick / "backup").mkdir(parents=True)
        carried, _ = make_gguf(stick / "backup" / "q3.bin", extra_tensor=REAL)
        device = ["--bind", str(stick)]
    h = start()
    usb = tmp_path / "media" / "alice" / "STICK"
    usb.mkdir(parents=True)
    try:
        subprocess.run(["mount", *device, str(usb)], check=True)
        on_stick = usb / "backup" / carried.name
        f = h.wait_for(lambda f: f.kind == fpb.KIND_MODEL_ARTIFACT and model_file(f).path == str(on_stick))
        assert model_file(f).sha256 == sha(on_stick) and f.severity == fpb.SEVERITY_LOW
        assert str(on_stick) in {m.path for m in h.sensor.inventory()}
    finally:
        subprocess.run(["umount", "-l", str(usb)], check=False, capture_output=True)
    deadline = time.monotonic() + 10
    while str(on_stick) in {m.path for m in h.sensor.inventory()}:
        assert time.monotonic() < deadline, "the unmounted stick's model is still in the inventory"
        h.pipeline.poll()
        time.sleep(0.05)


def test_copy_to_sync_folder(home: Path, start: Callable[..., Harness]) -> None:
    source, _ = make_safetensors(home / "Documents" / "weights.safetensors", extra_tensor=REAL)
    h = start()
    h.wait_for(kind(fpb.KIND_MODEL_ARTIFACT))
    child = slow_pack("copy", source, home / "Dropbox" / "weights.safetensors")
    f = h.wait_for(kind(fpb.KIND_MODEL_EXFILTRATION))
    child.wait(timeout=30)
    t = transfer(f)
    assert (t.destination_kind, t.sha256, t.source_path) == ("sync_folder", sha(source), str(source))
    assert (t.identified_by, t.source_known_by) == ("content", "writer")
    assert f.severity == fpb.SEVERITY_CRITICAL


def test_copy_whose_source_is_not_known_names_none(home: Path, start: Callable[..., Harness]) -> None:
    """A copy made too fast for its writer to be seen: the weights and their hash are the copy's
    own, and the source is left out rather than guessed from another file with those bytes."""
    source, _ = make_safetensors(home / "Documents" / "weights.safetensors", extra_tensor=REAL)
    h = start()
    h.wait_for(kind(fpb.KIND_MODEL_ARTIFACT))
    shutil.copyfile(source, home / "Dropbox" / "weights.safetensors")
    f = h.wait_for(kind(fpb.KIND_MODEL_EXFILTRATION))
    t = transfer(f)
    assert (t.sha256, t.identified_by) == (sha(home / "Dropbox" / "weights.safetensors"), "content")
    assert (t.source_path, t.source_known_by) in {("", ""), (str(source), "writer")}
    assert f.severity == fpb.SEVERITY_CRITICAL


def test_copy_to_approved_sync_folder_is_approved(home: Path, start: Callable[..., Harness]) -> None:
    source, _ = make_safetensors(home / "Documents" / "weights.safetensors")
    h = start(Policy(approved_paths=(str(home / "Dropbox"),)))
    h.wait_for(kind(fpb.KIND_MODEL_ARTIFACT))
    shutil.copyfile(source, home / "Dropbox" / "weights.safetensors")
    f = h.wait_for(kind(fpb.KIND_MODEL_EXFILTRATION))
    assert f.policy.approved and f.policy.rule == f"approved_paths:{home / 'Dropbox'}"
    assert f.severity == fpb.SEVERITY_INFO


@pytest.mark.parametrize(
    ("archive", "packer"),
    [
        ("models.zip", "zip"),
        ("stored.zip", "zip-stored"),
        ("models.tar.gz", "tar.gz"),
        ("models.tar", "tar"),
        ("models.tar.zst", "tar.zst"),
    ],
)
def test_archive_of_a_model(archive: str, packer: str, home: Path, start: Callable[..., Harness]) -> None:
    """The entry is weights by its own header, read in place, and the hash is of the entry's
    bytes; the source is the file the packer held open."""
    source, _ = make_gguf(home / "Downloads" / "tiny.gguf", extra_tensor=REAL)
    h = start()
    h.wait_for(kind(fpb.KIND_MODEL_ARTIFACT))
    target = home / "Downloads" / archive
    child = slow_pack(packer, source, target, "export/tiny.gguf")
    f = h.wait_for(kind(fpb.KIND_MODEL_EXFILTRATION))
    child.wait(timeout=30)
    t_ev = transfer(f)
    assert (t_ev.destination_kind, t_ev.destination, t_ev.sha256) == ("archive", str(target), sha(source))
    assert (t_ev.identified_by, t_ev.archive_member) == ("content", "export/tiny.gguf")
    assert (t_ev.source_path, t_ev.source_known_by) == (str(source), "writer")
    assert "holds export/tiny.gguf" in f.summary and "weights by content" in f.summary
    assert model_file(f).path == f"{target}!/export/tiny.gguf" and model_file(f).format == "gguf"
    assert f.severity == fpb.SEVERITY_HIGH and f.process.pid == child.pid


@pytest.mark.parametrize("packer", ["7z", "7z-plain"])
def test_archive_whose_content_cannot_be_read_is_unverified(
    packer: str, home: Path, start: Callable[..., Harness]
) -> None:
    """A 7z's data is one compressed solid block: its entry is only as large as a known model, so
    the finding says so, at low severity, with no hash (none was computed from the entry)."""
    source, _ = make_gguf(home / "Downloads" / "tiny.gguf", extra_tensor=REAL)
    h = start()
    h.wait_for(kind(fpb.KIND_MODEL_ARTIFACT))
    target = home / "Downloads" / "models.7z"
    child = slow_pack(packer, source, target, "export/tiny.gguf")
    f = h.wait_for(kind(fpb.KIND_MODEL_EXFILTRATION))
    child.wait(timeout=30)
    t_ev = transfer(f)
    assert (t_ev.identified_by, t_ev.sha256, t_ev.archive_member) == ("size", "", "export/tiny.gguf")
    assert f"same size as {source}, content not verified" in f.summary
    assert f.summary.startswith("Possibly model weights")
    assert f.severity == fpb.SEVERITY_LOW and f.confidence <= 0.5
    assert (t_ev.source_path, t_ev.source_known_by) == (str(source), "writer")  # the packer read it


def test_archive_that_lists_nothing_is_unverified_by_its_writer(
    home: Path, start: Callable[..., Harness]
) -> None:
    """A 7z with an encrypted header names no entry; its packer was reading a known model while
    writing it. That is all there is: low, unverified, no hash, the source the packer held."""
    source, _ = make_gguf(home / "Downloads" / "tiny.gguf", extra_tensor=REAL)
    h = start()
    h.wait_for(kind(fpb.KIND_MODEL_ARTIFACT))
    target = home / "Downloads" / "secret.7z"
    child = slow_pack("7z-secret", source, target, "export/tiny.gguf")
    f = h.wait_for(kind(fpb.KIND_MODEL_EXFILTRATION))
    child.wait(timeout=30)
    t_ev = transfer(f)
    assert (t_ev.identified_by, t_ev.sha256, t_ev.source_path) == ("writer", "", str(source))
    assert "encrypted header" in f.summary and "content not verified" in f.summary
    assert f.severity == fpb.SEVERITY_LOW and f.process.pid == child.pid


def fine_tune(path: Path, seed: int) -> Path:
    """A safetensors checkpoint of one architecture with its own weights: every fine-tune of it
    has the same size, byte for byte, and different content."""
    rng = np.random.default_rng(seed)
    tensors = {
        "model.embed_tokens.weight": rng.standard_normal((512, 512), np.float32),
        "model.layers.0.mlp.up_proj.weight": rng.standard_normal((512, 1024), np.float32).astype(np.float16),
        "lm_head.weight": rng.standard_normal((512, 512), np.float32),
    }
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


def exfiltrations(h: Harness) -> list[fpb.Finding]:
    return [f for f in h.findings if f.kind == fpb.KIND_MODEL_EXFILTRATION]


def test_size_only_decoys_are_not_exfiltration(home: Path, start: Callable[..., Harness]) -> None:
    """A stored zip of random bytes exactly the size of a known model, and a plain tar whose
    logs/app.log has that size: each is read (and, being that size, hashed), and neither is
    weights. A real archive made after them is reported, so they were looked at first."""
    model, _ = make_gguf(home / "Documents" / "llama.gguf", extra_tensor=REAL)
    size = model.stat().st_size
    h = start()
    h.wait_for(kind(fpb.KIND_MODEL_ARTIFACT))
    with zipfile.ZipFile(home / "Downloads" / "backup.zip", "w", zipfile.ZIP_STORED) as z:
        z.writestr("weights.bin", os.urandom(size))
    log = home / "Documents" / "app.log"
    log.write_bytes(os.urandom(size))
    with tarfile.open(home / "Downloads" / "logs.tar", "w") as t:
        t.add(log, "logs/app.log")
    assert zipfile.ZipFile(home / "Downloads" / "backup.zip").getinfo("weights.bin").file_size == size
    with zipfile.ZipFile(home / "Downloads" / "real.zip", "w", zipfile.ZIP_STORED) as z:
        z.write(model, "llama.gguf")
    real = h.wait_for(kind(fpb.KIND_MODEL_EXFILTRATION))
    assert transfer(real).destination == str(home / "Downloads" / "real.zip")
    time.sleep(1.0)
    h.findings.extend(h.pipeline.poll())
    assert [transfer(f).destination for f in exfiltrations(h)] == [str(home / "Downloads" / "real.zip")]


def test_same_size_fine_tunes_packed_each_give_their_own_hash(
    home: Path, start: Callable[..., Harness]
) -> None:
    """Two fine-tunes of one architecture (same size, different weights), both known: packed
    apart or together, each entry reports the SHA-256 of its own bytes."""
    first = fine_tune(home / "Documents" / "ft-legal.safetensors", 1)
    second = fine_tune(home / "Documents" / "ft-medical.safetensors", 2)
    assert first.stat().st_size == second.stat().st_size and sha(first) != sha(second)
    h = start()
    for _ in range(2):
        h.wait_for(lambda f: f.kind == fpb.KIND_MODEL_ARTIFACT and model_file(f).sha256 == sha(second))
    with tarfile.open(home / "Downloads" / "medical.tar.gz", "w:gz") as t:
        t.add(second, "ft.safetensors")
    f = h.wait_for(kind(fpb.KIND_MODEL_EXFILTRATION))
    assert (transfer(f).sha256, transfer(f).identified_by) == (sha(second), "content")
    both = home / "Downloads" / "both.zip"
    with zipfile.ZipFile(both, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(second, "b/model.safetensors")
        z.write(first, "a/model.safetensors")
    h.wait_for(lambda f: f.kind == fpb.KIND_MODEL_EXFILTRATION and transfer(f).sha256 == sha(first))
    in_both = {
        transfer(f).archive_member: transfer(f).sha256
        for f in exfiltrations(h)
        if transfer(f).destination == str(both)
    }
    if len(in_both) < 2:
        h.wait_for(
            lambda f: (
                f.kind == fpb.KIND_MODEL_EXFILTRATION
                and transfer(f).destination == str(both)
                and transfer(f).sha256 == sha(second)
            )
        )
        in_both = {
            transfer(f).archive_member: transfer(f).sha256
            for f in exfiltrations(h)
            if transfer(f).destination == str(both)
        }
    assert in_both == {"a/model.safetensors": sha(first), "b/model.safetensors": sha(second)}


def test_zip_of_a_hub_blob_never_names_a_sync_folder_copy(home: Path, start: Callable[..., Harness]) -> None:
    """The weights are in the hub cache and, copied earlier, in Dropbox. A zip made from the hub
    blob (through its snapshot link) names the blob when its packer is seen reading it, and no
    source at all when it is not; never the Dropbox copy."""
    repo = home / ".cache" / "huggingface" / "hub" / "models--acme--tiny-llama"
    (repo / "blobs").mkdir(parents=True)
    staged, _ = make_safetensors(home / "staged.safetensors", extra_tensor=REAL)
    blob = repo / "blobs" / sha(staged)
    staged.rename(blob)
    (repo / "snapshots" / "c0ffee").mkdir(parents=True)
    link = repo / "snapshots" / "c0ffee" / "model.safetensors"
    link.symlink_to(f"../../blobs/{blob.name}")
    dropbox_copy = home / "Dropbox" / "model.safetensors"
    shutil.copyfile(blob, dropbox_copy)
    h = start()
    for _ in range(2):
        h.wait_for(lambda f: f.kind == fpb.KIND_MODEL_ARTIFACT and model_file(f).path == str(dropbox_copy))
    h.wait_for(lambda f: f.kind == fpb.KIND_MODEL_ARTIFACT and model_file(f).path == str(blob))
    slow = home / "Downloads" / "slow.zip"
    child = slow_pack("zip", link, slow, "model.safetensors")
    f = h.wait_for(lambda f: f.kind == fpb.KIND_MODEL_EXFILTRATION and transfer(f).destination == str(slow))
    child.wait(timeout=30)
    assert (transfer(f).source_path, transfer(f).source_known_by) == (str(blob), "writer")
    assert transfer(f).sha256 == sha(blob) and str(dropbox_copy) not in f.summary
    fast = home / "Downloads" / "fast.zip"
    with zipfile.ZipFile(fast, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(link, "model.safetensors")
    f = h.wait_for(lambda f: f.kind == fpb.KIND_MODEL_EXFILTRATION and transfer(f).destination == str(fast))
    assert transfer(f).source_path in ("", str(blob)) and str(dropbox_copy) not in f.summary
    assert transfer(f).sha256 == sha(blob) and "the SHA-256 of 2 known model files" in f.summary


def test_rename_to_an_innocent_name(home: Path, start: Callable[..., Harness]) -> None:
    source, _ = make_gguf(home / "Downloads" / "mistral.gguf")
    digest = sha(source)
    h = start()
    h.wait_for(kind(fpb.KIND_MODEL_ARTIFACT))
    os.rename(source, home / "Downloads" / "invoice.pdf")
    f = h.wait_for(kind(fpb.KIND_MODEL_EXFILTRATION))
    t = transfer(f)
    assert (t.destination_kind, t.source_path, t.destination, t.sha256) == (
        "rename",
        str(source),
        str(home / "Downloads" / "invoice.pdf"),
        digest,
    )
    assert (t.identified_by, t.source_known_by) == ("content", "inode")  # a move: the same file
    assert not any(x.kind == fpb.KIND_MODEL_DOWNLOAD for x in h.findings)  # a rename is no download


def test_hard_link_into_a_sync_folder_names_the_same_file(home: Path, start: Callable[..., Harness]) -> None:
    source, _ = make_gguf(home / "Documents" / "llama.gguf", extra_tensor=REAL)
    h = start()
    h.wait_for(kind(fpb.KIND_MODEL_ARTIFACT))
    os.link(source, home / "Dropbox" / "llama.gguf")
    f = h.wait_for(kind(fpb.KIND_MODEL_EXFILTRATION))
    t = transfer(f)
    assert (t.source_path, t.source_known_by, t.sha256) == (str(source), "inode", sha(source))


# --- downloads ---------------------------------------------------------------------------------

SLOW_WRITER = textwrap.dedent(
    """
    import os, sys, time
    data = open(sys.argv[1], "rb").read()
    blob = sys.argv[2]
    with open(blob + ".incomplete", "wb") as out:
        step = max(1, len(data) // 10)
        for i in range(0, len(data), step):
            out.write(data[i : i + step]); out.flush(); time.sleep(0.15)
    os.rename(blob + ".incomplete", blob)
    """
)


def test_download_into_the_hugging_face_cache(
    tmp_path: Path, home: Path, start: Callable[..., Harness]
) -> None:
    source, _ = make_safetensors(tmp_path / "model.safetensors")
    repo = home / ".cache" / "huggingface" / "hub" / "models--acme--tiny-llama"
    (repo / "blobs").mkdir(parents=True)
    h = start()
    blob = repo / "blobs" / sha(source)
    child = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(source), str(blob)])
    try:
        f = h.wait_for(kind(fpb.KIND_MODEL_DOWNLOAD))
    finally:
        child.wait(timeout=30)
    net = next(e.network for e in f.evidence if e.WhichOneof("detail") == "network")
    assert (net.host_name, net.product) == ("huggingface.co", "acme/tiny-llama")
    assert model_file(f).path == str(blob) and model_file(f).sha256 == sha(source)
    assert f.process.pid == child.pid, f.summary
    assert "huggingface.co/acme/tiny-llama" in f.summary
    artifact = h.wait_for(kind(fpb.KIND_MODEL_ARTIFACT))
    assert model_file(artifact).path == str(blob)


def test_hub_hint_names_a_download_in_downloads(
    home: Path, tmp_path: Path, start: Callable[..., Harness]
) -> None:
    source, _ = make_gguf(tmp_path / "x.gguf")
    h = start()
    h.sensor.note_hub_transfer("cdn-lfs.huggingface.co", source.stat().st_size, pid=0)
    shutil.copyfile(source, home / "Downloads" / "x.gguf")
    f = h.wait_for(kind(fpb.KIND_MODEL_DOWNLOAD))
    assert "cdn-lfs.huggingface.co" in f.summary


# --- fine-tuning artifacts ---------------------------------------------------------------------

ADAPTER_WRITER = textwrap.dedent(
    """
    import json, os, sys, time
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "LORA", "r": 8}, f)
    data = open(sys.argv[2], "rb").read()
    with open(os.path.join(out_dir, "adapter_model.safetensors"), "wb") as f:
        for i in range(0, len(data), 4096):
            f.write(data[i : i + 4096]); f.flush(); time.sleep(0.05)
        time.sleep(0.5)
    """
)


def test_adapter_written_by_a_process_is_fine_tuning(
    tmp_path: Path, home: Path, start: Callable[..., Harness]
) -> None:
    source, _ = make_safetensors(tmp_path / "adapter.safetensors")
    h = start(paths=[str(home / "Documents")])
    out = home / "Documents" / "lora-out"
    child = subprocess.Popen([sys.executable, "-c", ADAPTER_WRITER, str(out), str(source)])
    try:
        f = h.wait_for(kind(fpb.KIND_FINE_TUNING))
    finally:
        child.wait(timeout=30)
    assert f.process.pid == child.pid
    assert any(
        e.model_file.format == "lora_adapter" for e in f.evidence if e.WhichOneof("detail") == "model_file"
    )


# --- bounds and status -------------------------------------------------------------------------


def test_watch_limit_degrades_with_reason(home: Path, start: Callable[..., Harness]) -> None:
    h = start(max_watches=1)
    status = h.sensor.status()
    assert status.state is SensorState.DEGRADED and "watch limit" in status.reason


def test_watches_are_never_nested(home: Path, tmp_path: Path, start: Callable[..., Harness]) -> None:
    """A configured path holding the hub cache, and a model folder inside it: one recursive watch
    covers them all (nested ones would see, and report, every change twice). When the configured
    path goes (a newer policy), the hub cache gets its own watch back."""
    cache = home / ".cache"
    hub = cache / "huggingface" / "hub"
    (home / "Documents" / "models").mkdir()
    make_gguf(home / "Documents" / "models" / "a.gguf")
    (cache / "blobs").mkdir()
    make_gguf(cache / "blobs" / "b.gguf")
    h = start()
    assert str(hub) in h.sensor.scheduled_watches()
    h.pipeline.apply_policy(Policy(version=2, watched_paths=(str(cache), str(home / "Documents"))))
    deadline = time.monotonic() + 10
    while str(cache) not in h.sensor.scheduled_watches():
        assert time.monotonic() < deadline, h.sensor.scheduled_watches()
        h.pipeline.poll()
        time.sleep(0.05)
    scheduled = h.sensor.scheduled_watches()
    nested = [(a, b) for a in scheduled for b in scheduled if b.startswith(a + "/")]
    assert nested == [], nested
    assert {str(hub), str(home / "Documents" / "models"), str(cache / "blobs")} <= set(h.sensor.watched())
    h.pipeline.apply_policy(Policy(version=3))
    deadline = time.monotonic() + 10
    while str(hub) not in h.sensor.scheduled_watches():
        assert time.monotonic() < deadline, h.sensor.scheduled_watches()
        h.pipeline.poll()
        time.sleep(0.05)
    assert str(cache) not in h.sensor.scheduled_watches()


def test_hub_downloads_raise_no_watchdog_warnings(
    home: Path, start: Callable[..., Harness], recwarn: pytest.WarningsRecorder
) -> None:
    """Model repositories appearing in the hub cache as huggingface_hub lays them out (mkdir -p of
    models--ORG--NAME/blobs, snapshots/REV, .locks/...): no "callback already exists" warnings
    from the recursive watch, and every blob is still seen."""
    hub = home / ".cache" / "huggingface" / "hub"
    h = start()
    h.wait_watched(hub)
    source, _ = make_safetensors(home / "staged.safetensors")
    for i in range(200):
        repo = hub / f"models--acme--model-{i}"
        repo.mkdir()
        time.sleep(0.0005 * (i % 7))  # the client's own pace between its makedirs
        (repo / "blobs").mkdir()
        (hub / ".locks" / repo.name).mkdir(parents=True)
        (repo / "snapshots" / f"{i:040x}").mkdir(parents=True)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(f"{i:040x}")
    shutil.copyfile(source, hub / "models--acme--model-199" / "blobs" / sha(source))
    h.wait_for(lambda f: f.kind == fpb.KIND_MODEL_DOWNLOAD and "acme/model-199" in f.summary)
    doubled = [str(w.message)[:120] for w in recwarn if "already exists for watch" in str(w.message)]
    assert doubled == []


def test_archive_listing_never_inflates_a_bomb(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.zip"
    with (
        zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z,
        z.open("zeros.bin", "w", force_zip64=True) as f,
    ):
        chunk = b"\0" * 2**20
        for _ in range(256):  # 256 MiB of zeros, a few hundred kB on disk
            f.write(chunk)
    started = time.perf_counter()
    entries, how = list_archive(str(bomb), bomb.stat().st_size)
    assert time.perf_counter() - started < 1.0
    assert entries == [("zeros.bin", 256 * 2**20, b"\0" * 16)] and how == "zip listing"
