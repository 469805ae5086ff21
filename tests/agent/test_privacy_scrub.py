"""The scrubbing rules, one by one: secrets and prompts out of argv, URLs and free text.

Each test names a rule of agent/catalog/secrets.toml (or of the scrubber's reading of argv) and
shows the secret gone, the marker in its place, and what must stay (program, options, model,
scheme, host, port) still there. Hostile inputs: megabyte arguments, unicode, both option
forms, repeated options, nested shells, unbalanced quotes.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from agent.catalog import default_runtime_catalog
from agent.catalog.secrets import CatalogError, default_secret_rules, extra_rules, load_secret_rules
from agent.privacy.scrub import MARKER, Scrubber, scrub_argv, scrub_text, scrub_url

SECRET = "sk-SECRET123456"
PROMPT = "summarise the Q3 acquisition memo"


def _leaks(out: list[str] | str, *secrets: str) -> list[str]:
    text = " ".join(out) if isinstance(out, list) else out
    return [s for s in secrets if s in text]


# --- options ----------------------------------------------------------------------------------


def test_the_issue_command_line_keeps_program_model_and_options_but_not_key_or_prompt() -> None:
    argv = ["llama-server", "-m", "x.gguf", "--api-key", SECRET, "-p", PROMPT, "--port", "8080"]
    assert scrub_argv(argv) == [
        "llama-server",
        "-m",
        "x.gguf",
        "--api-key",
        MARKER,
        "-p",
        MARKER,
        "--port",
        "8080",
    ]


@pytest.mark.parametrize(
    "option",
    ["--api-key", "--token", "--password", "--hf-token", "--auth-token", "--client-secret", "--secret"],
)
def test_secret_option_value_is_replaced_in_both_forms(option: str) -> None:
    assert scrub_argv(["tool", option, "hunter2-value"]) == ["tool", option, MARKER]
    assert scrub_argv(["tool", f"{option}=hunter2-value"]) == ["tool", f"{option}={MARKER}"]


def test_long_options_compare_without_case_and_with_underscores_as_dashes() -> None:
    out = scrub_argv(["tool", "--API_KEY", "v1", "--Hf_Token=v2"])
    assert out == ["tool", "--API_KEY", MARKER, f"--Hf_Token={MARKER}"]


def test_repeated_options_are_each_replaced() -> None:
    argv = ["vllm", "serve", "m", "--api-key", "k1", "--api-key", "k2", "--api-key=k3", "--prompt", "p1"]
    out = scrub_argv(argv)
    assert _leaks(out, "k1", "k2", "k3", "p1") == []
    assert out.count(MARKER) == 3 and out.count(f"--api-key={MARKER}") == 1
    assert out[:3] == ["vllm", "serve", "m"]


def test_an_option_at_the_end_without_its_value_is_kept_and_nothing_else_goes() -> None:
    assert scrub_argv(["tool", "--port", "80", "--api-key"]) == ["tool", "--port", "80", "--api-key"]


def test_the_value_after_a_secret_option_goes_even_when_it_looks_like_an_option() -> None:
    assert scrub_argv(["tool", "--password", "--hunter2"]) == ["tool", "--password", MARKER]


def test_dash_p_is_a_prompt_for_llama_cpp_but_not_for_every_program() -> None:
    assert scrub_argv(["llama-cli", "-m", "m.gguf", "-p", PROMPT]) == [
        "llama-cli",
        "-m",
        "m.gguf",
        "-p",
        MARKER,
    ]
    assert scrub_argv(["llamafile", "-p", PROMPT])[2] == MARKER
    assert scrub_argv(["mlx_lm.generate", "--model", "m", "-p", PROMPT])[-1] == MARKER
    # -p is a port for many programs: kept where no rule says otherwise.
    assert scrub_argv(["some-server", "-p", "8080"]) == ["some-server", "-p", "8080"]


def test_runtime_id_given_by_the_caller_applies_that_runtimes_rules() -> None:
    argv = ["renamed-binary", "-p", PROMPT]
    assert scrub_argv(argv) == argv  # nothing says this program is llama.cpp
    assert scrub_argv(argv, runtime_id="llama-cpp") == ["renamed-binary", "-p", MARKER]


def test_runtime_recognised_through_python_module_and_launcher() -> None:
    out = scrub_argv(["python3", "-m", "mlx_lm.generate", "--prompt", PROMPT, "-p", "again"])
    assert _leaks(out, PROMPT, "again") == []
    out = scrub_argv(["uv", "run", "llama-cli", "-p", PROMPT])
    assert out == ["uv", "run", "llama-cli", "-p", MARKER]


def test_glued_short_option_value_for_programs_that_take_one() -> None:
    assert scrub_argv(["mysql", "-u", "root", "-pHunter2"]) == ["mysql", "-u", "root", f"-p{MARKER}"]
    assert scrub_argv(["sshpass", "-p", "Hunter2", "ssh", "h"]) == ["sshpass", "-p", MARKER, "ssh", "h"]
    # Not glued for llama.cpp: its -ps... options are other options.
    assert scrub_argv(["llama-cli", "-psx"]) == ["llama-cli", "-psx"]


def test_curl_credentials_and_headers() -> None:
    out = scrub_argv(["curl", "-u", "alice:pw", "-H", "x-api-key: abc123", "https://api.example.com/v1"])
    assert out == ["curl", "-u", MARKER, "-H", MARKER, "https://api.example.com/v1"]


# --- positional prompts ------------------------------------------------------------------------


def test_ollama_run_keeps_the_model_and_drops_the_prompt() -> None:
    out = scrub_argv(["ollama", "run", "llama3.2", PROMPT, "and more"])
    assert out == ["ollama", "run", "llama3.2", MARKER, MARKER]
    assert scrub_argv(["ollama", "run", "--verbose", "llama3.2"]) == [
        "ollama",
        "run",
        "--verbose",
        "llama3.2",
    ]
    assert scrub_argv(["ollama", "serve"]) == ["ollama", "serve"]


def test_llama_run_and_ramalama_run_positional_prompts() -> None:
    assert scrub_argv(["llama-run", "model.gguf", PROMPT]) == ["llama-run", "model.gguf", MARKER]
    assert scrub_argv(["ramalama", "run", "granite", PROMPT]) == ["ramalama", "run", "granite", MARKER]
    # llama-server is llama.cpp too, but takes no positional prompt.
    assert scrub_argv(["llama-server", "model.gguf"]) == ["llama-server", "model.gguf"]


# --- KEY=value and names -----------------------------------------------------------------------


def test_env_style_arguments_with_secret_names() -> None:
    argv = [
        "env",
        "OPENAI_API_KEY=sk-abc",
        "HF_TOKEN=x",
        "AWS_SECRET_ACCESS_KEY=y",
        "MAX_TOKENS=5",
        "python",
        "a.py",
    ]
    out = scrub_argv(argv)
    assert out == [
        "env",
        f"OPENAI_API_KEY={MARKER}",
        f"HF_TOKEN={MARKER}",
        f"AWS_SECRET_ACCESS_KEY={MARKER}",
        "MAX_TOKENS=5",
        "python",
        "a.py",
    ]


def test_option_names_that_look_secret_in_the_equals_form() -> None:
    out = scrub_argv(["tool", "--db-password=pw", "--my-access-token=t", "--max-tokens=512", "--tokenizer=x"])
    assert out == [
        "tool",
        f"--db-password={MARKER}",
        f"--my-access-token={MARKER}",
        "--max-tokens=512",
        "--tokenizer=x",
    ]


def test_prompt_named_values_go() -> None:
    assert scrub_argv(["tool", f"PROMPT={PROMPT}"]) == ["tool", f"PROMPT={MARKER}"]
    assert scrub_text(f"system_prompt={PROMPT.replace(' ', '_')}") == f"system_prompt={MARKER}"


# --- URLs and connection strings ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://umbra:s3cret@db.example.com:5432/umbra",
            f"postgresql://{MARKER}@db.example.com:5432/umbra",
        ),
        ("mongodb+srv://u:p@cluster0.example.net/x", f"mongodb+srv://{MARKER}@cluster0.example.net/x"),
        ("https://ghp_token@github.com/o/r.git", f"https://{MARKER}@github.com/o/r.git"),
        ("https://h.example/v1?api_key=abc&model=x", f"https://h.example/v1?api_key={MARKER}&model=x"),
        ("https://h.example/?token=abc", f"https://h.example/?token={MARKER}"),
        (
            "https://b.s3.amazonaws.com/k?X-Amz-Credential=AK%2F1&X-Amz-Signature=deadbeef",
            f"https://b.s3.amazonaws.com/k?X-Amz-Credential={MARKER}&X-Amz-Signature={MARKER}",
        ),
        (
            "https://acct.blob.core.windows.net/c/b?sv=2022&sig=abc%3D",
            f"https://acct.blob.core.windows.net/c/b?sv=2022&sig={MARKER}",
        ),
        (
            "https://app.example/cb#access_token=xyz&state=1",
            f"https://app.example/cb#access_token={MARKER}&state=1",
        ),
        ("redis://:pw@[::1]:6379/0", f"redis://{MARKER}@[::1]:6379/0"),
        (
            "https://huggingface.co/org/model/resolve/main/x.gguf",
            "https://huggingface.co/org/model/resolve/main/x.gguf",
        ),
    ],
)
def test_scrub_url_keeps_scheme_host_port_and_drops_credentials(url: str, expected: str) -> None:
    assert scrub_url(url) == expected
    assert scrub_text(url) == expected  # the same URL inside free text or an argument
    assert scrub_argv(["tool", url]) == ["tool", expected]


def test_webhook_path_tokens() -> None:
    url = "https://hooks.slack.com/services/T0000000/B0000000/XXXXXXXXXXXXXXXXXXXXXXXX"
    assert scrub_url(url) == f"https://hooks.slack.com/services/{MARKER}"
    bot = "https://api.telegram.org/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/getMe"
    assert "AAHdq" not in scrub_url(bot) and scrub_url(bot).startswith("https://api.telegram.org/bot")


def test_libpq_keyword_connection_string() -> None:
    out = scrub_text("host=db.example.com port=5432 user=umbra password=s3cret dbname=umbra")
    assert out == f"host=db.example.com port=5432 user=umbra password={MARKER} dbname=umbra"


def test_malformed_urls_are_text_not_errors() -> None:
    assert scrub_url("http://[::1") == "http://[::1"
    assert scrub_url("not a url token=abc") == f"not a url token={MARKER}"


# --- shapes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret",
    [
        "sk-proj-abcdefghijklmnopqrstuvwxyz012345",
        "sk-ant-api03-abcdefghijklmnopqrstuvwxyz",
        SECRET,
        "hf_abcdefghijklmnopqrstuvwxyzABCDEFGH",
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
        "glpat-abcdefghijklmnopqrst",
        "AKIAIOSFODNN7EXAMPLE",
        "AIzaSyA-abcdefghijklmnopqrstuvwxyz01234",
        "xoxb-1234567890-abcdefghij",
        "gsk_abcdefghijklmnopqrstuvwxyz",
        "sk_live_abcdefghijklmnop",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ],
)
def test_well_known_key_shapes_anywhere(secret: str) -> None:
    line = f"started with {secret} in the middle"
    assert scrub_text(line) == f"started with {MARKER} in the middle"
    assert scrub_argv(["tool", secret]) == ["tool", MARKER]
    assert scrub_argv(["tool", f"--flag={secret}"]) == ["tool", f"--flag={MARKER}"]


def test_words_that_only_resemble_keys_stay() -> None:
    line = "pip install sk-learn scikit-learn; AKIA; hf_hub; max_tokens=512 tokenizer=x key=ollama"
    assert scrub_text(line) == line


def test_bearer_authorization_and_api_key_headers() -> None:
    assert scrub_text("Authorization: Bearer abcdefgh12345678").startswith("Authorization: ")
    for line in ("Authorization: Bearer abcdefgh12345678", "curl -H 'Authorization: Basic dXNlcjpwYXNz'"):
        assert "abcdefgh12345678" not in scrub_text(line) and "dXNlcjpwYXNz" not in scrub_text(line)
    assert scrub_text("x-api-key: abc123") == f"x-api-key: {MARKER}"
    assert scrub_text('{"api_key": "v", "model": "m"}') == f'{{"api_key": "{MARKER}", "model": "m"}}'


def test_private_key_block() -> None:
    pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----"
    assert scrub_text(f"key: {pem} end") == f"key: {MARKER} end"
    cut = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0B"  # an argument cut short by the kernel
    assert scrub_text(cut) == MARKER


# --- shells and rewritten argv ---------------------------------------------------------------------


def test_shell_command_strings_are_scrubbed_as_command_lines() -> None:
    out = scrub_argv(["sh", "-c", f"llama-cli -m m.gguf -p '{PROMPT}' --api-key {SECRET}"])
    assert out[:2] == ["sh", "-c"]
    assert _leaks(out, PROMPT, SECRET, "acquisition") == []
    assert "llama-cli -m m.gguf -p" in out[2]
    assert scrub_argv(["bash", "-lc", "ollama serve"]) == ["bash", "-lc", "ollama serve"]
    unbalanced = scrub_argv(["sh", "-c", f"ollama run llama3 '{PROMPT}"])
    assert _leaks(unbalanced, "acquisition") == []


def test_nested_shells_are_bounded_and_still_scrubbed() -> None:
    command = f"llama-cli --api-key {SECRET} -p {shlex.quote(PROMPT)}"
    for _ in range(6):  # deeper than the scrubber reads argv: below that, the text rules still hold
        command = f"sh -c {shlex.quote(command)}"
    out = scrub_argv(["sh", "-c", command])
    assert len(out) == 3 and SECRET not in out[2]
    shallow = scrub_argv(["sh", "-c", f"sh -c {shlex.quote(f'llama-cli -p {shlex.quote(PROMPT)}')}"])
    assert "acquisition" not in shallow[2] and MARKER in shallow[2]


def test_setproctitle_single_string_argv() -> None:
    out = scrub_argv([f"llama-server -m x.gguf --api-key {SECRET} -p hello"])
    assert out == [f"llama-server -m x.gguf --api-key {MARKER} -p {MARKER}"]


# --- hostile inputs ----------------------------------------------------------------------------------


def test_megabyte_arguments_are_scrubbed_whole() -> None:
    huge = "a" * 1_000_000
    out = scrub_argv(
        ["llama-server", huge, "--api-key", SECRET + huge, "-p", huge, f"x={huge}", f"token={huge}"]
    )
    assert out == ["llama-server", huge, "--api-key", MARKER, "-p", MARKER, f"x={huge}", f"token={MARKER}"]
    text = ("http://" + "b" * 1000) * 300 + " password=" + huge
    assert scrub_text(text).endswith(f"password={MARKER}") or huge not in scrub_text(text)
    assert scrub_text("eyJ" * 300_000) == "eyJ" * 300_000
    assert SECRET not in scrub_text(f"{'x=' * 300_000} {SECRET}")


def test_unicode_arguments() -> None:
    argv = ["llama-cli", "-p", "résume le mémo 🤫 Q3", "--api-key", "ключ-секрет", "--model", "модель.gguf"]
    assert scrub_argv(argv) == ["llama-cli", "-p", MARKER, "--api-key", MARKER, "--model", "модель.gguf"]
    line = "пароль password=пароль123 🤫"  # noqa: RUF001 (Cyrillic on purpose)
    assert scrub_text(line) == f"{line.split()[0]} password={MARKER} 🤫"
    surrogates = "tool\udcff --token=\udcfe"  # /proc bytes that are not UTF-8 (surrogateescape)
    assert scrub_text(surrogates) == f"tool\udcff --token={MARKER}"


def test_empty_and_odd_argv() -> None:
    assert scrub_argv([]) == []
    assert scrub_argv([""]) == [""]
    assert scrub_argv(["-"]) == ["-"]
    assert scrub_argv(["tool", "--", "--api-key", "v"]) == ["tool", "--", "--api-key", MARKER]
    assert scrub_argv(("tuple", "--token", "t")) == ["tuple", "--token", MARKER]


def test_scrubbing_is_idempotent() -> None:
    argv = ["llama-server", "--api-key", SECRET, "-p", PROMPT, "postgresql://u:p@h/db", "HF_TOKEN=x"]
    once = scrub_argv(argv)
    assert scrub_argv(once) == once
    line = f"Authorization: Bearer abcdefgh12345678 password=x {SECRET} https://u:p@h/?sig=1"
    assert scrub_text(scrub_text(line)) == scrub_text(line)


# --- the catalog and the config's additions ----------------------------------------------------------------


def test_catalog_rules_each_have_a_source_and_known_runtimes() -> None:
    rules = default_secret_rules()
    known = {e.id for e in default_runtime_catalog().entries}
    assert rules.runtime_ids() <= known
    assert all(r.source.startswith("https://") for r in (*rules.options, *rules.positional, *rules.values))
    assert {"llama-cpp", "ollama"} <= rules.runtime_ids()


def _catalog(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "secrets.toml"
    path.write_text("schema_version = 1\n" + body)
    return path


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ('[[options]]\nid = "a"\nkind = "credential"\noptions = ["--x"]\n', "missing required key 'source'"),
        ('[[options]]\nid = "a"\nkind = "bad"\noptions = ["--x"]\nsource = "https://x"\n', "kind must be"),
        (
            '[[options]]\nid = "a"\nkind = "prompt"\noptions = ["x y"]\nsource = "https://x"\n',
            "not an option name",
        ),
        (
            '[[options]]\nid = "a"\nkind = "prompt"\noptions = ["--x"]\nglued = true\nsource = "https://x"\n',
            "glued applies to one-letter",
        ),
        ('[[values]]\nid = "v"\npattern = "a*"\nsource = "https://x"\n', "matches the empty string"),
        ('[[values]]\nid = "v"\npattern = "(unclosed"\nsource = "https://x"\n', "does not compile"),
        ('[[values]]\nid = "v"\npattern = "(?P<other>x)"\nsource = "https://x"\n', "only named group"),
        ('[[key_names]]\nid = "k"\npatterns = []\nsource = "https://x"\n', "must not be empty"),
        ('[[positional]]\nid = "p"\nruntime = "ollama"\nkeep = -1\nsource = "https://x"\n', "keep must be"),
        (
            '[[positional]]\nid = "p"\nruntime = "no-such"\nkeep = 1\nsource = "https://x"\n',
            "unknown runtime id",
        ),
        ("[[surprise]]\n", "unknown top-level key"),
    ],
)
def test_broken_catalog_is_refused_with_the_reason(tmp_path: Path, body: str, names: str) -> None:
    known = {e.id for e in default_runtime_catalog().entries}
    with pytest.raises(CatalogError, match=re.escape(names)):
        load_secret_rules(_catalog(tmp_path, body), known_runtimes=known)


def test_extra_rules_from_config_extend_the_catalog() -> None:
    rules = default_secret_rules().merged(
        extra_rules(["--corp-secret", "-Z"], ["^internal[-_]"], [r"CORP-[0-9]{6}"], "[privacy]")
    )
    scrubber = Scrubber(rules)
    out = scrubber.argv(["tool", "--corp-secret", "a", "-Z", "b", "INTERNAL_ID=c", "--x=CORP-123456"])
    assert out == ["tool", "--corp-secret", MARKER, "-Z", MARKER, f"INTERNAL_ID={MARKER}", f"--x={MARKER}"]
    assert scrubber.text("ticket CORP-654321 raised") == f"ticket {MARKER} raised"
    # The packaged rules still hold.
    assert scrubber.argv(["tool", "--api-key", "k"]) == ["tool", "--api-key", MARKER]


@pytest.mark.parametrize(
    ("options", "keys", "values", "names"),
    [
        (["api-key"], [], [], "secret_options: 'api-key' is not an option name"),
        ([], ["(bad"], [], "key_patterns: '(bad' does not compile"),
        ([], [], [".*"], "value_patterns: '.*' matches the empty string"),
        ([], [], ["x" * 3000], "value_patterns: a pattern of 3000 characters"),
    ],
)
def test_bad_config_additions_are_refused(
    options: list[str], keys: list[str], values: list[str], names: str
) -> None:
    with pytest.raises(CatalogError, match=re.escape(names)):
        extra_rules(options, keys, values, "[privacy]")
