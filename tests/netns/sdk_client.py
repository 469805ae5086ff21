"""One call through an official, unmodified AI SDK, to the service's real host name.

`python sdk_client.py openai|openai-upload|anthropic|huggingface [UPLOAD_BYTES]`. The namespace's hosts file
sends the name to the test's fake service; SSL_CERT_FILE makes the SDK trust the test CA. Prints
one JSON line: the pid, what was sent and what came back.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile


def main() -> None:
    which = sys.argv[1]
    out: dict[str, object] = {"pid": os.getpid(), "sdk": which}
    if which == "openai":
        import openai

        client = openai.OpenAI(api_key="sk-umbra-test", max_retries=0, timeout=20)
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "say hello"}]
        )
        out.update(version=openai.__version__, reply=reply.choices[0].message.content)
    elif which == "openai-upload":  # a file for fine-tuning: UPLOAD_BYTES of random data
        import openai

        size = int(sys.argv[2])
        client = openai.OpenAI(api_key="sk-umbra-test", max_retries=0, timeout=60)
        made = client.files.create(file=("train.jsonl", os.urandom(size)), purpose="fine-tune")
        out.update(version=openai.__version__, size=size, file=made.id)
    elif which == "anthropic":
        import anthropic

        client = anthropic.Anthropic(api_key="sk-ant-umbra-test", max_retries=0, timeout=20)
        message = client.messages.create(
            model="claude-sonnet-4-5", max_tokens=16, messages=[{"role": "user", "content": "say hello"}]
        )
        block = message.content[0]
        out.update(version=anthropic.__version__, reply=getattr(block, "text", ""))
    elif which == "huggingface":
        import huggingface_hub

        size = int(sys.argv[2])
        with tempfile.NamedTemporaryFile(suffix=".safetensors", delete=False) as f:
            f.write(os.urandom(size))  # incompressible, as weights are
        try:
            info = huggingface_hub.HfApi(token="hf_umbra_test").upload_file(
                path_or_fileobj=f.name, path_in_repo="model.safetensors", repo_id="umbra-test/leak"
            )
        finally:
            os.unlink(f.name)
        out.update(version=huggingface_hub.__version__, size=size, commit=info.oid)
    else:
        raise SystemExit(f"unknown SDK {which!r}")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
