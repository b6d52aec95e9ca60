#!/usr/bin/env python3
"""CI check: the official `openai` Python client against `decdec serve`.

usage: openai_client_check.py DECDEC_BIN MODEL_DIR

Starts `DECDEC_BIN serve --model MODEL_DIR` on a free loopback port, runs one streaming chat
completion (plus a model listing and a non-streaming completion) through `openai.OpenAI`, asserts
that text came back, and stops the server. Exits non-zero on any failure.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request

from openai import OpenAI


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base: str, proc: subprocess.Popen, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"decdec serve exited early with status {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"decdec serve did not become healthy within {seconds:.0f} s")


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    binary, model_dir = sys.argv[1], sys.argv[2]
    model_name = os.path.basename(os.path.normpath(model_dir))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [binary, "serve", "--model", model_dir, "--host", "127.0.0.1", "--port", str(port)]
    )
    try:
        wait_healthy(base, proc)
        client = OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)

        ids = [m.id for m in client.models.list()]
        assert ids == [model_name], f"models.list() returned {ids}, expected [{model_name!r}]"

        stream = client.chat.completions.create(
            model=model_name,
            messages=[{"role": "user", "content": "Tell me a story about a cat."}],
            max_tokens=48,
            temperature=0.8,
            seed=1,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, finish, usage, chunk_ids = "", None, None, set()
        for chunk in stream:
            chunk_ids.add(chunk.id)
            assert chunk.object == "chat.completion.chunk", chunk.object
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
            usage = chunk.usage or usage
        assert text.strip(), "the streaming chat completion returned no text"
        assert len(chunk_ids) == 1, f"chunks carry different ids: {chunk_ids}"
        assert finish in ("stop", "length"), f"finish_reason {finish!r}"
        assert usage is not None and usage.completion_tokens > 0, f"usage {usage}"
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

        done = client.completions.create(
            model=model_name, prompt="Once upon a time", max_tokens=16, temperature=0
        )
        assert done.choices[0].text.strip(), "the completion returned no text"

        print(
            f"openai client check passed: {usage.completion_tokens} streamed tokens, "
            f"finish_reason={finish}: {text[:80]!r}..."
        )
        return 0
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    sys.exit(main())
