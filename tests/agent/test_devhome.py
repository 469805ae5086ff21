"""Precision on a developer's home: a real virtual environment of the scientific stack (numpy,
scipy, scikit-learn, onnx, h5py installed by pip at the dev extra's pins), datasets of arrays and
tables, and real weights among them. The real file sensor and detection pipeline must raise no
model finding above info for the data and the packages' test fixtures, and find every real model.

The environment is built once per set of pins into ~/.cache/umbra/ (CI pays the pip install
once) and hard-linked into each test's home.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
from umbra.v1 import finding_pb2 as fpb

from agent.delivery.tracker import FindingTracker
from agent.detection.artifacts import ArtifactDetector
from agent.pipeline import Pipeline
from agent.policy.rules import Policy
from agent.sensors.files.sensor import FileSensor
from agent.sensors.files.significance import ModelRule, judge, package_tree
from tests.agent.test_files_sensor import REAL, home_only_catalog, model_file, sha, transfer
from tests.agent.test_modelfiles_formats import make_gguf, make_onnx, make_safetensors, make_torch_zip

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="inotify and /proc: Linux")

REPO = Path(__file__).resolve().parents[2]
STACK = ("numpy", "scipy", "scikit-learn", "onnx", "h5py")
MODEL_KINDS = (fpb.KIND_MODEL_ARTIFACT, fpb.KIND_MODEL_DOWNLOAD, fpb.KIND_MODEL_EXFILTRATION)


def stack_pins() -> list[str]:
    """The scientific stack's exact pins, from pyproject's dev extra (the one place they live)."""
    dev = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    pins = {re.split(r"[=\[]", p, maxsplit=1)[0].lower(): p for p in dev}
    missing = [name for name in STACK if name not in pins or "==" not in pins[name]]
    assert not missing, f"not pinned in the dev extra: {missing}"
    return [pins[name] for name in STACK]


@pytest.fixture(scope="module")
def scientific_venv() -> Path:
    """A real virtual environment with the pinned stack, cached by pins and Python version."""
    pins = stack_pins()
    key = hashlib.sha256("\n".join([sys.version, *pins]).encode()).hexdigest()[:16]
    target = Path.home() / ".cache" / "umbra" / f"devhome-venv-{key}"
    if (target / ".complete").exists():
        return target
    building = target.with_name(f"{target.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(building)], check=True)
    subprocess.run(
        [
            str(building / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            *pins,
        ],
        check=True,
        timeout=1500,
    )
    (building / ".complete").write_text("\n".join(pins) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    building.rename(target)
    return target


def link_tree(source: Path, destination: Path) -> None:
    """A copy of `source` whose files are hard links (cheap), or real copies across devices."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["cp", "-al", str(source), str(destination)], capture_output=True, check=False)
    if done.returncode != 0:
        shutil.rmtree(destination, ignore_errors=True)
        shutil.copytree(source, destination, symlinks=True)


def write_datasets(data: Path) -> None:
    """What a data scientist keeps: arrays, archives of arrays, tables, HDF5 measurements."""
    rng = np.random.default_rng(7)
    (data / "mri").mkdir(parents=True)
    for i in range(3):
        with (data / "mri" / f"scan_{i}.npy").open("wb") as fh:
            np.save(fh, rng.random((64, 128, 128), dtype=np.float32))  # 4 MB, 1M elements
    with (data / "embeddings.npy").open("wb") as fh:
        np.save(fh, rng.random((20_000, 128), dtype=np.float32))  # 10 MB, 2.6M elements
    with (data / "features.npz").open("wb") as fh:
        np.savez(fh, X_train=rng.random((20_000, 64)), y_train=rng.integers(0, 9, 20_000))
    with (data / "results.npz").open("wb") as fh:
        np.savez_compressed(fh, rng.random((512, 512)), rng.random((512, 512)))
    with h5py.File(data / "measurements.h5", "w") as f:
        f.create_dataset("table", data=rng.random((50_000, 8)))
    rows = [f"{i},{rng.random():.6f},{rng.integers(0, 100)}" for i in range(50_000)]
    (data / "table.csv").write_text("id,value,label\n" + "\n".join(rows) + "\n")


def write_real_models(home: Path, venv: Path) -> dict[str, Path]:
    """Real weights, written by the libraries the format tests use, some under innocent names."""
    home.joinpath("Documents").mkdir(parents=True, exist_ok=True)
    ckpt = home / "projects" / "llm" / "checkpoints"
    ckpt.mkdir(parents=True)
    (home / "models").mkdir()
    jax = home / "projects" / "jax"
    jax.mkdir(parents=True)
    with (jax / "params.npz").open("wb") as fh:  # arrays named like weights: a model
        np.savez(
            fh,
            **{
                "dense_0/kernel": np.zeros((1024, 1024), np.float32),
                "dense_0/bias": np.zeros(1024, np.float32),
            },
        )
    site = next((venv / "lib").glob("python3*/site-packages"))
    return {
        "renamed gguf": make_gguf(home / "Documents" / "q3_report.pdf", extra_tensor=REAL)[0],
        "safetensors": make_safetensors(ckpt / "model.safetensors", extra_tensor=REAL)[0],
        "pytorch zip": make_torch_zip(ckpt / "pytorch_model.bin", storages=3, floats=400_000)[0],
        "onnx": make_onnx(home / "models" / "classifier.onnx", width=16_384)[0],
        "npz of weights": jax / "params.npz",
        # weights hidden among a package's files: as large as a real model, so they still count
        "gguf in site-packages": make_gguf(site / "sklearn" / "_cache.bin", extra_tensor=25_100_000)[0],
    }


@pytest.fixture
def devhome(tmp_path: Path, scientific_venv: Path) -> Iterator[tuple[Path, Path, dict[str, Path]]]:
    home = tmp_path / "home" / "alice"
    venv = home / "projects" / "analysis" / ".venv"
    link_tree(scientific_venv, venv)
    write_datasets(home / "data")
    (home / "Downloads").mkdir()
    real = write_real_models(home, venv)
    yield home, venv, real
    shutil.rmtree(tmp_path / "home", ignore_errors=True)


@pytest.mark.timeout(1800)
def test_devhome_only_real_models_count(tmp_path: Path, devhome: tuple[Path, Path, dict[str, Path]]) -> None:
    home, venv, real = devhome
    sensor = FileSensor(
        state_path=tmp_path / "state" / "files.db",
        homes=[str(home)],
        media_prefixes=[str(tmp_path / "media")],
        catalog=home_only_catalog(),
        settle_seconds=0.3,
        files_per_second=200_000,
        read_bytes_per_second=512 * 2**20,
        hash_bytes_per_second=512 * 2**20,
        cpu_percent=100.0,  # a test: as fast as the machine goes (the agent's default is 2 %)
    )
    pipeline = Pipeline([sensor], [ArtifactDetector()], Policy(), FindingTracker("devhome"))
    findings: dict[str, fpb.Finding] = {}

    def collect(until: float, done: object) -> None:
        while time.monotonic() < until:
            for f in pipeline.poll():
                findings[f.id] = f
            if callable(done) and done():
                return
            time.sleep(0.1)

    sensor.start()
    try:
        assert sensor.first_scan_done.wait(600), "first scan did not finish"

        def all_hashed() -> bool:
            inventory = sensor.inventory()
            return bool(inventory) and all(m.sha256 for m in inventory)

        collect(time.monotonic() + 120, all_hashed)
        collect(time.monotonic() + 1, None)
        artifacts = [f for f in findings.values() if f.kind == fpb.KIND_MODEL_ARTIFACT]
        counted = {model_file(f).path for f in artifacts if f.severity > fpb.SEVERITY_INFO}
        assert counted == {str(p) for p in real.values()}, "\n".join(
            sorted(f"{fpb.Severity.Name(f.severity)} {f.summary}" for f in artifacts)
        )
        demoted = [f for f in artifacts if f.severity == fpb.SEVERITY_INFO]
        assert any(str(venv) in model_file(f).path for f in demoted), "the packages' fixtures are visible"
        assert any("/data/" in model_file(f).path for f in demoted), "the datasets' arrays are visible"
        for f in demoted:  # each says why it does not count
            reasons = " | ".join(model_file(f).reasons)
            assert "floor" in reasons or "without model context" in reasons, reasons
            if str(venv) in model_file(f).path:
                assert "shipped by a package (site-packages/" in reasons, reasons
        for f in artifacts:
            if f.severity > fpb.SEVERITY_INFO:
                assert "at or above the" in " | ".join(model_file(f).reasons)

        # Packing the data and a real model: only the model's exfiltration counts.
        backup = home / "Downloads" / "backup.tar"
        with tarfile.open(backup, "w") as t:
            t.add(home / "data" / "features.npz", "data/features.npz")
            t.add(real["renamed gguf"], "docs/q3_report.pdf")

        def both_packed() -> bool:
            packed = {
                transfer(f).archive_member for f in findings.values() if f.kind == fpb.KIND_MODEL_EXFILTRATION
            }
            return {"data/features.npz", "docs/q3_report.pdf"} <= packed

        collect(time.monotonic() + 30, both_packed)
        exfiltrations = {  # by the entry packed (its source is named only when its packer is seen)
            transfer(f).archive_member: f for f in findings.values() if f.kind == fpb.KIND_MODEL_EXFILTRATION
        }
        assert exfiltrations["docs/q3_report.pdf"].severity == fpb.SEVERITY_HIGH
        assert transfer(exfiltrations["docs/q3_report.pdf"]).sha256 == sha(real["renamed gguf"])
        data_copy = exfiltrations["data/features.npz"]
        assert data_copy.severity == fpb.SEVERITY_INFO
        assert "without model context" in " | ".join(model_file(data_copy).reasons)
        above = [
            f.summary
            for f in findings.values()
            if f.kind in MODEL_KINDS
            and f.severity > fpb.SEVERITY_INFO
            and not any(str(p) in f.summary for p in real.values())
        ]
        assert not above, above
    finally:
        sensor.stop()


# --- the rule itself ----------------------------------------------------------------------------


def test_rule_floors_and_reasons() -> None:
    rule = ModelRule()
    tiny = judge(rule, "/home/a/x.onnx", "onnx", 4506, 37)
    assert not tiny.counts and len(tiny.reasons) == 2
    assert "below the 1.0 MB size floor" in tiny.reasons[0] and "parameter floor" in tiny.reasons[1]
    big = judge(rule, "/home/a/x.gguf", "gguf", 4_400_000, 1_100_000)
    assert big.counts and "at or above the 1.0 MB size floor" in big.reasons[0]
    unknown_params = judge(rule, "/home/a/pytorch_model.bin", "pytorch", 4_800_000, 0)
    assert unknown_params.counts


def test_rule_package_trees() -> None:
    rule = ModelRule()
    path = "/home/a/.venv/lib/python3.11/site-packages/scipy/special/tests/data/boost.npz"
    assert package_tree(path, rule.package_dirs) == "site-packages/scipy"
    assert package_tree("/home/a/app/node_modules/onnxruntime-web/dist/m.onnx", rule.package_dirs) == (
        "node_modules/onnxruntime-web"
    )
    assert package_tree("/home/a/pkgs/model.gguf", rule.package_dirs) == ""  # not a conda install
    shipped = judge(rule, path, "numpy-npz", 50_000_000, 5_000_000, weight_names=10, arrays=10)
    assert not shipped.counts and "shipped by a package (site-packages/scipy)" in shipped.reasons[0]
    hidden = judge(rule, path, "gguf", 4_000_000_000, 7_000_000_000)
    assert hidden.counts and "inside a package tree" in hidden.reasons[-1]
    everywhere = ModelRule(package_dirs=())
    assert judge(everywhere, path, "onnx", 50_000_000, 5_000_000).counts


def test_rule_numpy_needs_context(tmp_path: Path) -> None:
    rule = ModelRule()
    data = judge(rule, "/home/a/data/x.npz", "numpy-npz", 10_000_000, 2_000_000, weight_names=0, arrays=2)
    assert not data.counts and "without model context" in data.reasons[0]
    named = judge(rule, "/home/a/p.npz", "numpy-npz", 10_000_000, 2_000_000, weight_names=2, arrays=2)
    assert named.counts and "named like weights" in named.reasons[-1]
    located = judge(
        rule, "/home/a/.cache/hf/x.npy", "numpy", 10_000_000, 2_000_000, location_kind="hub_cache"
    )
    assert located.counts
    assert judge(
        ModelRule(numpy_needs_context=False), "/home/a/data/x.npy", "numpy", 10_000_000, 2_000_000
    ).counts
    conda = tmp_path / "miniconda3"
    (conda / "conda-meta").mkdir(parents=True)
    assert package_tree(str(conda / "pkgs" / "pytorch-2.1" / "w.pt"), rule.package_dirs) == "pkgs/pytorch-2.1"
