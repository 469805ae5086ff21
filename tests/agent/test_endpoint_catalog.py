"""The AI endpoint catalog: its data file, strict validation, matching rules, merging, approval."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.catalog import CatalogError
from agent.catalog.endpoints import (
    ENDPOINT_CATEGORIES,
    EndpointCatalog,
    default_endpoint_catalog,
    load_endpoint_catalog,
    parse_endpoint_catalog,
)


@pytest.fixture(scope="module")
def catalog() -> EndpointCatalog:
    return load_endpoint_catalog()


def test_catalog_size_and_fields(catalog: EndpointCatalog) -> None:
    assert catalog.pattern_count >= 250
    assert len(catalog) >= 100
    for entry in catalog.entries:
        assert entry.category in ENDPOINT_CATEGORIES
        assert entry.source.startswith("https://")
        assert entry.hosts
    assert default_endpoint_catalog().pattern_count == catalog.pattern_count


@pytest.mark.parametrize(
    ("host", "service"),
    [
        ("api.openai.com", "openai-api"),
        ("eu.api.openai.com", "openai-api"),
        ("chatgpt.com", "chatgpt"),
        ("ab.chatgpt.com", "chatgpt"),
        ("files.oaiusercontent.com", "chatgpt"),
        ("sdmntprwestus.oaiusercontent.com", "chatgpt"),
        ("api.anthropic.com", "anthropic-api"),
        ("claude.ai", "claude"),
        ("gemini.google.com", "gemini-app"),
        ("aistudio.google.com", "google-ai-studio"),
        ("generativelanguage.googleapis.com", "gemini-api"),
        ("us-central1-aiplatform.googleapis.com", "vertex-ai"),
        ("europe-west4-aiplatform.googleapis.com", "vertex-ai"),
        ("my-resource.openai.azure.com", "azure-openai"),
        ("my-resource.cognitiveservices.azure.com", "azure-ai-services"),
        ("bedrock-runtime.us-east-1.amazonaws.com", "aws-bedrock-runtime"),
        ("bedrock-runtime.eu-central-1.amazonaws.com", "aws-bedrock-runtime"),
        ("bedrock-agent-runtime.us-west-2.amazonaws.com", "aws-bedrock-agents"),
        ("api.mistral.ai", "mistral-api"),
        ("api.cohere.com", "cohere"),
        ("api.groq.com", "groq"),
        ("api.together.xyz", "together"),
        ("api.fireworks.ai", "fireworks"),
        ("api.perplexity.ai", "perplexity-api"),
        ("api.deepseek.com", "deepseek-api"),
        ("openrouter.ai", "openrouter"),
        ("api.replicate.com", "replicate"),
        ("api.x.ai", "xai-api"),
        ("huggingface.co", "huggingface-hub"),
        ("cdn-lfs.huggingface.co", "huggingface-cdn"),
        ("cdn-lfs-us-1.hf.co", "huggingface-cdn"),
        ("cas-bridge.xethub.hf.co", "huggingface-cdn"),
        ("us-east-1.aws.endpoints.huggingface.cloud", "huggingface-inference"),
        ("someone-demo.hf.space", "huggingface-spaces"),
        ("registry.ollama.ai", "ollama-registry"),
        ("ollama.com", "ollama-registry"),
        ("poe.com", "poe"),
        ("neo.character.ai", "character-ai"),
        ("copilot-proxy.githubusercontent.com", "github-copilot"),
        ("api.githubcopilot.com", "github-copilot"),
        ("proxy.individual.githubcopilot.com", "github-copilot"),
        ("api2.cursor.sh", "cursor"),
        ("server.codeium.com", "windsurf"),
        ("api.tabnine.com", "tabnine"),
        ("cody-gateway.sourcegraph.com", "sourcegraph-cody"),
        ("replit.com", "replit"),
        ("cdn.midjourney.com", "midjourney"),
        ("api.stability.ai", "stability"),
        ("api.elevenlabs.io", "elevenlabs"),
        ("api.dev.runwayml.com", "runway"),
        ("api.moonshot.cn", "moonshot-api"),
        ("open.bigmodel.cn", "zhipu-api"),
        ("qianfan.baidubce.com", "baidu-qianfan"),
        ("dashscope.aliyuncs.com", "alibaba-dashscope"),
        ("ark.cn-beijing.volces.com", "volcengine-ark"),
        ("api.minimax.chat", "minimax"),
        ("clovastudio.stream.ntruss.com", "naver-hyperclova"),
        ("api.aleph-alpha.com", "aleph-alpha"),
        ("api.ai21.com", "ai21"),
        ("api.reka.ai", "reka"),
        ("api.writer.com", "writer"),
        ("x.lepton.run", "lepton"),
        ("model-abc.api.baseten.co", "baseten"),
        ("me--app.modal.run", "modal"),
        ("pod-8888.proxy.runpod.net", "runpod"),
        ("api.endpoints.anyscale.com", "anyscale"),
        ("api.deepinfra.com", "deepinfra"),
        ("api.cerebras.ai", "cerebras"),
        ("api.sambanova.ai", "sambanova"),
        ("api.novita.ai", "novita"),
        ("api.studio.nebius.ai", "nebius"),
        ("api.hyperbolic.xyz", "hyperbolic"),
        ("api.lambdalabs.com", "lambda"),
        ("you.com", "you-com"),
        ("www.phind.com", "phind"),
        ("pi.ai", "pi"),
        ("www.meta.ai", "meta-ai"),
        ("copilot.microsoft.com", "microsoft-copilot"),
        ("chat.qwen.ai", "qwen-chat"),
        ("www.doubao.com", "bytedance-doubao"),
        ("sakana.ai", "sakana"),
    ],
)
def test_known_hosts(catalog: EndpointCatalog, host: str, service: str) -> None:
    match = catalog.match(host)
    assert match is not None, host
    assert match.entry.id == service


@pytest.mark.parametrize(
    "host",
    [
        "openai.azure.com",  # the suffix itself is not below it
        "badopenai.azure.com",
        "notopenai.com",
        "openai.com.evil.example",
        "huggingface.co.attacker.net",
        "xhf.co",
        "www.google.com",
        "github.com",
        "amazonaws.com",
        "s3.us-east-1.amazonaws.com",
        "",
        ".",
        "com",
    ],
)
def test_lookalikes_do_not_match(catalog: EndpointCatalog, host: str) -> None:
    assert catalog.match(host) is None


def test_case_trailing_dot_and_precedence(catalog: EndpointCatalog) -> None:
    match = catalog.match("API.OpenAI.COM.")
    assert match is not None and (match.entry.id, match.how) == ("openai-api", "exact")
    longest = catalog.match("x.api.openai.com")
    assert longest is not None and longest.pattern == "*.api.openai.com"  # not "*.openai.com"
    glob = catalog.match("cdn-lfs-eu-1.huggingface.co")
    assert glob is not None and glob.how == "glob" and glob.entry.id == "huggingface-cdn"
    deeper = catalog.match("a.cdn-lfs.huggingface.co")  # a glob stays inside its label
    assert deeper is not None and deeper.entry.id == "huggingface-hub"


TEMPLATE = """
schema_version = 1
[[service]]
id = "svc"
vendor = "V"
product = "P"
category = "model_api"
risk = "medium"
source = "https://example.com/docs"
hosts = {hosts}
{extra}
"""


@pytest.mark.parametrize(
    ("hosts", "extra", "message"),
    [
        ('["*.com"]', "", "top-level domain"),
        ('["a.*.example.com"]', "", "one '*'"),
        ('["*"]', "", "one '*'"),
        ('["ex ample.com"]', "", "not a host name"),
        ('["a.example.com", "A.example.com"]', "", "listed twice"),
        ('["a.example.com"]', 'colour = "red"', "unknown key"),
        ("[]", "", "non-empty list"),
    ],
)
def test_strict_loader(hosts: str, extra: str, message: str) -> None:
    with pytest.raises(CatalogError) as info:
        parse_endpoint_catalog(TEMPLATE.format(hosts=hosts, extra=extra), "mine.toml")
    text = str(info.value)
    assert message in text and "mine.toml" in text and "\n" not in text


def test_duplicate_id() -> None:
    second = TEMPLATE.format(hosts='["b.example.com"]', extra="").replace("schema_version = 1", "")
    with pytest.raises(CatalogError, match=r"x.toml: entry 'svc': duplicate id"):
        parse_endpoint_catalog(TEMPLATE.format(hosts='["a.example.com"]', extra="") + second, "x.toml")


def test_duplicate_pattern_across_entries() -> None:
    doc = TEMPLATE.format(hosts='["a.example.com"]', extra="") + TEMPLATE.format(
        hosts='["a.example.com"]', extra=""
    ).replace('id = "svc"', 'id = "other"').replace("schema_version = 1", "")
    with pytest.raises(
        CatalogError, match=r"entry 'other': host pattern 'a.example.com' is already in entry 'svc'"
    ):
        parse_endpoint_catalog(doc, "x.toml")


def test_user_file_merged_over_packaged(tmp_path: Path) -> None:
    user = tmp_path / "mine.toml"
    user.write_text(
        TEMPLATE.format(hosts='["llm.corp.example", "api.openai.com"]', extra="").replace(
            '"svc"', '"corp-llm"'
        )
    )
    merged = load_endpoint_catalog(user_path=user)
    corp = merged.match("llm.corp.example")
    assert corp is not None and corp.entry.id == "corp-llm"
    taken = merged.match("api.openai.com")
    assert taken is not None and taken.entry.id == "corp-llm"  # the user's claim wins
    still = merged.match("platform.openai.com")
    assert still is not None and still.entry.id == "openai-api"
    with pytest.raises(CatalogError, match="cannot read"):
        load_endpoint_catalog(user_path=tmp_path / "missing.toml")


def test_approval(catalog: EndpointCatalog) -> None:
    entry = catalog.get("openai-api")
    assert entry is not None and entry.vendor_slug == "openai"
    assert catalog.approval_rule(entry, {"openai"}) == "approved_services:openai"
    assert catalog.approval_rule(entry, {"openai-api"}) == "approved_services:openai-api"
    assert catalog.approval_rule(entry, {"anthropic"}) is None
    assert catalog.unknown_approvals(["openai", "no-such-thing"]) == ["no-such-thing"]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_match_never_raises(name: str) -> None:
    default_endpoint_catalog().match(name)
