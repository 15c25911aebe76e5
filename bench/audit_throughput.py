"""Throughput of unredact's generation engine vs a naive per-prompt `model.generate` loop.

Same model, same prompts, same max_new_tokens, greedy, measured side by side in one run. Also reports
model load time (first: assemble + dequantise, read from the cache marker; cached: measured now) and
peak RSS. Usage: python bench/audit_throughput.py [--model demo/qwen2.5-coder-0.5b] [--n 24] [--tokens 64]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

from unredact.backends.base import GenerationRequest
from unredact.backends.registry import BackendOptions, load_backend
from unredact.probes.loader import load_probes, select_probes


def naive_loop(backend, requests: list[GenerationRequest]) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    """One prompt at a time through transformers' own generate (the baseline)."""
    model, tok, engine = backend.model, backend.tokenizer, backend.engine
    tokens, start = 0, time.perf_counter()
    for req in requests:
        ids, mask = engine.encode([engine.render(req.messages)])
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=req.max_new_tokens,
                do_sample=False,
                eos_token_id=sorted(engine.eos_ids),
                pad_token_id=tok.pad_token_id,
            )
        tokens += int(out.shape[1] - ids.shape[1])
    return tokens, time.perf_counter() - start


def engine_run(backend, requests: list[GenerationRequest]) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    tokens = sum(r.n_tokens or 0 for r in backend.generate(requests))
    return tokens, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="demo/qwen2.5-coder-0.5b")
    ap.add_argument("--n", type=int, default=24, help="number of prompts")
    ap.add_argument("--tokens", type=int, default=64, help="max_new_tokens")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("bench/out/audit_throughput.json"))
    args = ap.parse_args()

    load_backend(args.model, BackendOptions(batch_size=args.batch_size))  # make sure the cache exists
    start = time.perf_counter()
    backend = load_backend(args.model, BackendOptions(batch_size=args.batch_size))
    cached_load = time.perf_counter() - start
    marker = Path(backend.resolved.path) / "unredact_cache.json"
    first_load = json.loads(marker.read_text())["seconds"] if marker.exists() else None

    probes = select_probes(load_probes("default"), kinds=["sensitive", "neutral", "harmless"], profile="quick")
    step = max(1, len(probes) // args.n)
    chosen = probes[::step][: args.n]
    requests = [
        GenerationRequest(key=p.id, messages=({"role": "user", "content": p.prompt},), max_new_tokens=args.tokens)
        for p in chosen
    ]
    naive_tokens, naive_s = naive_loop(backend, requests)
    eng_tokens, eng_s = engine_run(backend, requests)
    result = {
        "model": args.model,
        "prompts": len(requests),
        "max_new_tokens": args.tokens,
        "batch_size": args.batch_size,
        "dtype": backend.describe()["dtype"],
        "threads": torch.get_num_threads(),
        "naive": {
            "tokens": naive_tokens,
            "seconds": round(naive_s, 1),
            "tok_per_s": round(naive_tokens / naive_s, 1),
            "probes_per_s": round(len(requests) / naive_s, 3),
        },
        "engine": {
            "tokens": eng_tokens,
            "seconds": round(eng_s, 1),
            "tok_per_s": round(eng_tokens / eng_s, 1),
            "probes_per_s": round(len(requests) / eng_s, 3),
        },
        "speedup_probes_per_s": round(naive_s / eng_s, 2),
        "speedup_tok_per_s": round((eng_tokens / eng_s) / (naive_tokens / naive_s), 2),
        "load_first_s": first_load,
        "load_cached_s": round(cached_load, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
