#!/usr/bin/env python3
"""Load run against a running decdec server (stdlib only).

Phase 1: N sequential requests. Phase 2: M requests from C concurrent clients. Requests alternate
between streaming and non-streaming chat completions with varied prompts. Reports failures, latency
p50/p99, streaming time to first token, and generated tokens/s (completion tokens over wall time).
Exits 1 if any request failed.
"""

import argparse
import http.client
import json
import math
import statistics
import sys
import threading
import time
import urllib.parse

PROMPTS = [
    "Tell me a story about a dog.",
    "Once upon a time there was a princess.",
    "What did the little bird do?",
    "Lily wanted to play in the park.",
    "Tom found a big red ball.",
    "The sun was shining and the cat",
    "Write about a brave boy.",
    "Sam and his mom went to the shop.",
]


class Result:
    __slots__ = ("ok", "error", "latency", "ttft", "tokens", "stream")

    def __init__(self):
        self.ok, self.error, self.latency, self.ttft, self.tokens, self.stream = (
            False, None, 0.0, None, 0, False)


def one_request(host, port, model, i, max_tokens, timeout):
    r = Result()
    r.stream = i % 2 == 1
    body = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
        "max_tokens": max_tokens,
        "temperature": 0.8,
        "seed": i,
        "stream": r.stream,
    }
    if r.stream:
        body["stream_options"] = {"include_usage": True}
    t0 = time.perf_counter()
    try:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.request("POST", "/v1/chat/completions", json.dumps(body),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            r.error = f"HTTP {resp.status}: {resp.read()[:200]!r}"
            return r
        if r.stream:
            done, text = False, ""
            for raw in resp:
                line = raw.decode("utf-8").strip()
                if not line.startswith("data: "):
                    continue
                payload = line[len("data: "):]
                if payload == "[DONE]":
                    done = True
                    break
                chunk = json.loads(payload)
                if "error" in chunk:
                    r.error = f"stream error: {chunk['error']}"
                    return r
                for ch in chunk.get("choices", []):
                    c = ch.get("delta", {}).get("content")
                    if c:
                        if r.ttft is None:
                            r.ttft = time.perf_counter() - t0
                        text += c
                if chunk.get("usage"):
                    r.tokens = chunk["usage"]["completion_tokens"]
            if not done:
                r.error = "stream ended without data: [DONE]"
                return r
        else:
            v = json.loads(resp.read())
            msg = v["choices"][0]["message"]
            if msg.get("role") != "assistant" or not isinstance(msg.get("content"), str):
                r.error = f"bad message {msg}"
                return r
            r.tokens = v["usage"]["completion_tokens"]
        conn.close()
        r.latency = time.perf_counter() - t0
        r.ok = True
    except Exception as e:  # any transport or schema problem is a failure
        r.error = f"{type(e).__name__}: {e}"
    return r


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    # Nearest rank.
    k = max(0, min(len(xs) - 1, math.ceil(p / 100 * len(xs)) - 1))
    return xs[k]


def report(name, results, wall):
    ok = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    lat = [r.latency for r in ok]
    ttft = [r.ttft for r in ok if r.ttft is not None]
    tokens = sum(r.tokens for r in ok)
    print(f"{name}: {len(results)} requests, {len(failed)} failed, wall {wall:.2f} s")
    if lat:
        print(f"  latency  p50 {pct(lat, 50) * 1000:.1f} ms  p99 {pct(lat, 99) * 1000:.1f} ms  "
              f"max {max(lat) * 1000:.1f} ms  mean {statistics.mean(lat) * 1000:.1f} ms")
    if ttft:
        print(f"  TTFT (streaming)  p50 {pct(ttft, 50) * 1000:.1f} ms  p99 {pct(ttft, 99) * 1000:.1f} ms")
    print(f"  generated {tokens} tokens, {tokens / wall:.1f} tokens/s, {len(ok) / wall:.1f} requests/s")
    for r in failed[:5]:
        print(f"  failure: {r.error}")
    return {
        "requests": len(results), "failed": len(failed), "wall_s": wall,
        "p50_ms": pct(lat, 50) * 1000 if lat else None, "p99_ms": pct(lat, 99) * 1000 if lat else None,
        "ttft_p50_ms": pct(ttft, 50) * 1000 if ttft else None, "tokens": tokens,
        "tokens_per_s": tokens / wall,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base-url", default="http://127.0.0.1:8080")
    ap.add_argument("--model", default="stories260K")
    ap.add_argument("--sequential", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--concurrent-requests", type=int, default=160,
                    help="total requests of the concurrent phase")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    a = ap.parse_args()
    u = urllib.parse.urlparse(a.base_url)
    host, port = u.hostname, u.port or 80

    results = []
    t0 = time.perf_counter()
    for i in range(a.sequential):
        results.append(one_request(host, port, a.model, i, a.max_tokens, a.timeout))
    seq = report(f"sequential (1 client, max_tokens {a.max_tokens})", results,
                 time.perf_counter() - t0)

    results = [None] * a.concurrent_requests
    next_i = iter(range(a.concurrent_requests))
    lock = threading.Lock()

    def client():
        while True:
            with lock:
                i = next(next_i, None)
            if i is None:
                return
            results[i] = one_request(host, port, a.model, 10_000 + i, a.max_tokens, a.timeout)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(a.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    conc = report(f"concurrent ({a.concurrency} clients, max_tokens {a.max_tokens})", results,
                  time.perf_counter() - t0)
    if a.json:
        print(json.dumps({"sequential": seq, "concurrent": conc}))
    return 1 if seq["failed"] or conc["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
