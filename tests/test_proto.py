"""The committed wire code must be exactly what `make proto` generates from the .proto files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from conftest import REPO


def test_committed_generated_code_is_fresh(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("generate", REPO / "proto" / "generate.py")
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)

    fresh = generate.generate(tmp_path)
    assert fresh, "protoc generated nothing"
    committed_dir = REPO / "proto" / "umbra" / "v1"
    committed = sorted(
        p.name for p in committed_dir.iterdir() if p.suffix in {".py", ".pyi"} and p.name != "__init__.py"
    )
    assert committed == [p.name for p in fresh], "generated file set differs: run `make proto`"
    stale = [p.name for p in fresh if p.read_bytes() != (committed_dir / p.name).read_bytes()]
    assert not stale, f"committed wire code is stale: {stale}; run `make proto` and commit"


def test_every_design_kind_is_on_the_wire() -> None:
    from umbra import codec

    design = REPO.parent / "shared" / "DESIGN.md"
    kinds = {
        "LOCAL_MODEL_RUNTIME",
        "MODEL_SERVER_EXPOSED",
        "GPU_AI_WORKLOAD",
        "FINE_TUNING",
        "MODEL_ARTIFACT",
        "MODEL_DOWNLOAD",
        "MODEL_EXFILTRATION",
        "AI_SERVICE_ACCESS",
        "AI_DATA_UPLOAD",
        "AI_AGENT",
        "MCP_SERVER",
        "AI_EXTENSION",
        "AGENT_HEALTH",
    }
    if design.exists():  # cross-check against the design's table where it is checked out
        text = design.read_text()
        assert all(f"| {k} |" in text for k in kinds)
    assert set(codec.KIND_NAMES) == kinds
    for name in kinds:
        assert codec.kind_name(codec.kind_value(name)) == name
