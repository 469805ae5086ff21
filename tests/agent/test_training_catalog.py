"""The training catalog (agent/catalog/training.toml) and the command-line parser (agent/catalog/cmdline.py).

The catalog is the one list of training tools and artifact names: fine-tuning detection reads
the kind of a written path from it, the file sensor the names it confirms on disk, and the
parser the training launchers it looks through.
"""

from __future__ import annotations

import pytest

from agent.catalog import CatalogError
from agent.catalog.cmdline import PythonTarget, program, python_target
from agent.catalog.training import (
    ARTIFACT_KINDS,
    LABELS,
    artifact_kind,
    default_training_catalog,
    is_training_dir,
    is_training_file,
    parse_training_catalog,
)

CATALOG = default_training_catalog()


def test_packaged_catalog_has_sourced_tools_artifacts_and_hints() -> None:
    assert {t.id for t in CATALOG.tools} >= {"accelerate", "deepspeed", "trl", "torchrun", "peft"}
    assert {a.kind for a in CATALOG.artifacts} == ARTIFACT_KINDS
    assert {a.label for a in CATALOG.artifacts if a.confirm} <= LABELS
    sources = [(e.id, e.source) for e in CATALOG.tools] + [(e.id, e.source) for e in CATALOG.artifacts]
    sources += [(e.id, e.source) for e in CATALOG.script_hints]
    assert [i for i, source in sources if not source.startswith("https://")] == []
    assert CATALOG.launchers() == {"torchrun", "accelerate", "deepspeed"}


@pytest.mark.parametrize(
    "name",
    [
        "adapter_model.safetensors",
        "adapter_model.bin",
        "adapter_config.json",
        "trainer_state.json",
        "optimizer.pt",
        "optimizer.bin",
        "scheduler.pt",
        "training_args.bin",
        "rng_state.pth",
        "rng_state_3.pth",
        "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt",
    ],
)
def test_the_file_sensor_confirms_every_name_its_checks_know(name: str) -> None:
    assert is_training_file(name)


@pytest.mark.parametrize(
    "name",
    ["model.safetensors", "adapters.safetensors", "last.ckpt", "optimizer.pt.bak", "trainer_state.json~"],
)
def test_names_without_a_content_check_are_not_looked_for_on_disk(name: str) -> None:
    assert not is_training_file(name)


def test_training_directories() -> None:
    assert is_training_dir("checkpoint-500") and is_training_dir("global_step12")
    assert not is_training_dir("checkpoints") and not is_training_dir("checkpoint-final")


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/w/checkpoint-5/adapter_model.safetensors", "lora_adapter"),  # an adapter inside a checkpoint
        ("/w/checkpoint-5/scheduler.pt", "trainer_checkpoint"),  # the directory before the file
        ("/w/global_step3/", "deepspeed_checkpoint"),
        ("/w/x/zero_pp_rank_0_mp_rank_00_optim_states.pt", "deepspeed_checkpoint"),
        ("/w/torchtune/adapter_0.pt", "lora_adapter"),
        ("/w/torchtune/recipe_state.pt", "optimizer_state"),
        ("/w/lightning/last.ckpt", "trainer_checkpoint"),
        ("/w/checkpoint-5", None),  # the directory itself, not something in it
        ("adapter_model.bin", None),  # no directory: not a path a process writes
    ],
)
def test_artifact_kind_first_entry_wins(path: str, kind: str | None) -> None:
    assert artifact_kind(path) == kind


def test_script_hints() -> None:
    assert CATALOG.script_hint("finetune_llama.py") is not None
    assert CATALOG.script_hint("run_clm.py") is not None
    assert CATALOG.script_hint("constrain.py") is None
    assert CATALOG.script_hint("serve.py") is None


GOOD_TOOL = '[[tool]]\nid = "t"\nname = "T"\nsource = "https://example.com/t"\nprograms = ["t"]\n'
GOOD_ARTIFACT = (
    '[[artifact]]\nid = "a"\nname = "A"\nsource = "https://example.com/a"\nfiles = [\'a\\.pt\']\n'
    'kind = "optimizer_state"\n'
)


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (GOOD_TOOL.replace("https://", "http://"), ["'t'", "https://"]),
        (
            GOOD_TOOL.replace('source = "https://example.com/t"\n', ""),
            ["'t'", "missing required key 'source'"],
        ),
        (GOOD_TOOL + "colour = 1\n", ["unknown key", "colour"]),
        (GOOD_TOOL + GOOD_TOOL, ["'t'", "duplicate id"]),
        (GOOD_TOOL.replace('programs = ["t"]\n', ""), ["needs at least one of programs"]),
        (GOOD_TOOL + 'value_options = ["--n"]\n', ["launcher"]),
        (GOOD_TOOL + "strong = 1\n", ["'strong' must be true or false"]),
        (GOOD_ARTIFACT.replace('"optimizer_state"', '"weights"'), ["kind 'weights'"]),
        (GOOD_ARTIFACT + 'confirm = "torch"\n', ["confirm and label go together"]),
        (GOOD_ARTIFACT + 'confirm = "torch"\nlabel = "weights"\n', ["label 'weights'"]),
        (
            GOOD_ARTIFACT + 'confirm = "trainer_checkpoint"\nlabel = "trainer_checkpoint"\n',
            ["directory check"],
        ),
        (GOOD_ARTIFACT.replace("a\\.pt", "x*"), ["empty string"]),
        (GOOD_ARTIFACT.replace("a\\.pt", "(unclosed"), ["does not compile"]),
        (GOOD_ARTIFACT.replace("files = ['a\\.pt']\n", ""), ["needs files or directories"]),
        (GOOD_ARTIFACT + 'members = ["x"]\n', ["members go with"]),
    ],
)
def test_catalog_errors_name_the_file_and_the_entry(text: str, needles: list[str]) -> None:
    with pytest.raises(CatalogError) as caught:
        parse_training_catalog("schema_version = 1\n" + text, "t.toml")
    message = str(caught.value)
    assert message.startswith("t.toml: ")
    for needle in needles:
        assert needle in message


def test_a_good_catalog_parses() -> None:
    catalog = parse_training_catalog("schema_version = 1\n" + GOOD_TOOL + GOOD_ARTIFACT, "t.toml")
    assert [t.id for t in catalog.tools] == ["t"]
    assert catalog.artifact_kind("/x/a.pt") == "optimizer_state"
    assert catalog.confirmable_file("a.pt") is None  # no content check: the file sensor does not look


# --- the command-line parser ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "target"),
    [
        (("python", "-u", "-m", "trl.scripts.sft"), PythonTarget(module="trl.scripts.sft")),
        (("python", "-um", "trl"), PythonTarget(module="trl")),
        (("python", "-mtrl"), PythonTarget(module="trl")),
        (("python", "-W", "ignore", "train.py"), PythonTarget(script_index=3)),
        (("python", "-X", "dev", "--", "train.py"), PythonTarget(script_index=4)),
        (("python", "-c", "import peft"), PythonTarget(code=True)),
        (("python", "-m"), PythonTarget()),
        (("python", "-u"), PythonTarget()),
    ],
)
def test_python_target(argv: tuple[str, ...], target: PythonTarget) -> None:
    assert python_target(argv) == target


def test_training_launchers_are_looked_through_to_their_script() -> None:
    runs = program(("torchrun", "--nproc_per_node", "8", "--nnodes", "2", "train.py", "--lr", "1e-4"))
    assert runs.script_index == 5
    assert ("train.py", "torchrun") in runs.names
    # --config_file takes a value (the training catalog says so): c.yaml is not what runs.
    runs = program(("accelerate", "launch", "--config_file", "c.yaml", "train_sft.py"))
    assert runs.names == (("train_sft.py", "accelerate"),)
    assert runs.script_index == 4
    runs = program(("uv", "run", "--with", "vllm", "python", "-m", "vllm.entrypoints.openai.api_server"))
    assert runs.module == "vllm.entrypoints.openai.api_server"
