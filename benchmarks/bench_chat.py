"""Chat answer speed: time to first token, decode speed and whole-answer time, per generation backend.

    python benchmarks/bench_chat.py                  # the configured model and index (MEDQA_*)
    python benchmarks/bench_chat.py --questions 4    # a quicker run

Each question goes through ``build_query_engine(streaming=True)`` (retrieval of 3 sources, the prompt,
streaming, the repetition stop, citations), once with the default backend (llama.cpp on a CPU) and once
with transformers; the same-run baseline is raw transformers float32 ``generate`` on the very prompts the
engine built, for as many tokens as the engine's answer had. Time to first token counts from the question
to the first streamed text (retrieval included; the engine's retrieval, re-ranker included, is also timed on its own
against the retriever alone); decode speed is answer tokens after the first over the
time after the first. Run it alone: two cores shared with anything else halve every figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks._rows import emit_rows  # noqa: E402

QUESTIONS = [
    "What are the treatments for glaucoma?",
    "What is gout?",
    "How is asthma diagnosed?",
    "What causes anemia?",
    "Is high blood pressure inherited?",
    "What are the symptoms of shingles?",
    "How can I prevent osteoporosis?",
    "What is the outlook for psoriasis?",
]


def through_engine(engine, question: str, tokenizer) -> dict[str, float]:
    """Stream one answer through the engine; seconds to the first text, total seconds, answer tokens."""
    started = time.perf_counter()
    response = engine.query(question)
    first, text = None, ""
    for delta in response.response_gen:
        if first is None and delta.strip():
            first = time.perf_counter() - started
        text += delta
    total = time.perf_counter() - started
    tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    return {"ttft": first or total, "total": total, "tokens": tokens, "prompt": response.metadata.get("prompt_tokens", 0)}


def timed(call, *args) -> float:
    """Seconds one call takes."""
    started = time.perf_counter()
    call(*args)
    return time.perf_counter() - started


def raw_generate(model, tokenizer, prompt: str, new_tokens: int) -> dict[str, float]:
    """Raw transformers float32 greedy ``generate`` of exactly ``new_tokens`` tokens, streamed."""
    import threading

    import torch
    from transformers import TextIteratorStreamer

    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True)
    kwargs = dict(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, streamer=streamer)
    started = time.perf_counter()
    worker = threading.Thread(target=lambda: torch.inference_mode()(model.generate)(**kwargs))
    worker.start()
    first = None
    for delta in streamer:
        if first is None and delta.strip():
            first = time.perf_counter() - started
    worker.join()
    total = time.perf_counter() - started
    return {"ttft": first or total, "total": total, "tokens": new_tokens, "prompt": inputs["input_ids"].shape[1]}


def summary(runs: list[dict[str, float]]) -> dict[str, float]:
    """Median time to first token and whole answer; decode tok/s over all answers."""
    decode_tokens = sum(max(r["tokens"] - 1, 0) for r in runs)
    decode_time = sum(max(r["total"] - r["ttft"], 1e-9) for r in runs)
    return {
        "ttft": statistics.median(r["ttft"] for r in runs),
        "total": statistics.median(r["total"] for r in runs),
        "decode": decode_tokens / decode_time,
        "tokens": statistics.median(r["tokens"] for r in runs),
        "prompt": statistics.median(r["prompt"] for r in runs),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=len(QUESTIONS), help="how many of the fixed questions")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rag_app.config import Settings
    from rag_app.answer.engine import build_query_engine
    from rag_app.llm.load import load_embed_model
    from rag_app.llm.resolve import resolve_llm
    from rag_app.llm.info import model_info
    from rag_app.retrieval.modes import build_retriever

    torch.set_num_threads(os.cpu_count() or 1)
    settings = Settings(medical_notice=False)
    questions = QUESTIONS[: args.questions]
    retriever = build_retriever(settings, embed_model=load_embed_model(settings))
    resolved = resolve_llm(settings)
    tokenizer = AutoTokenizer.from_pretrained(resolved.path)

    results: dict[str, list[dict[str, float]]] = {}
    prompts: dict[str, str] = {}
    lengths: dict[str, int] = {}
    names = {}
    for backend in ("auto", "transformers"):
        engine = build_query_engine(settings.model_copy(update={"llm_backend": backend}), streaming=True, retriever=retriever)
        info = model_info(engine.llm)
        names[backend] = info.backend or backend
        through_engine(engine, "What is diabetes?", tokenizer)  # warm-up
        runs = []
        for q in questions:
            run = through_engine(engine, q, tokenizer)
            if backend == "auto":
                prompts[q] = tokenizer.apply_chat_template(engine.plan(q).messages, tokenize=False, add_generation_prompt=True)
                lengths[q] = max(run["tokens"], 2)
                run["prompt"] = len(tokenizer(prompts[q], add_special_tokens=False)["input_ids"])
            runs.append(run)
            print(f"{names[backend]:>12}: {q!r}: first token {run['ttft']:.2f} s, {run['tokens']} tokens in {run['total']:.2f} s", flush=True)
        results[backend] = runs
        if backend == "auto":  # what of the first-token time is finding the sources (re-ranker included)
            retrieval = statistics.median(timed(engine.retrieve, q) for q in questions)
            fielded = statistics.median(timed(retriever.retrieve, q) for q in questions)
        del engine

    model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=torch.float32).eval()
    raw_generate(model, tokenizer, prompts[questions[0]], 4)  # warm-up
    raw = [raw_generate(model, tokenizer, prompts[q], lengths[q]) for q in questions]
    base = summary(raw)
    rows = []
    for backend, runs in results.items():
        s = summary(runs)
        label = names[backend]
        rows += [
            (f"time to first token p50, s ({label})", s["ttft"], f"{base['ttft']:.3f} (raw fp32 generate)", f"{s['ttft'] / base['ttft']:.2f}", "<= 1 s"),
            (f"decode, tok/s ({label})", s["decode"], f"{base['decode']:.1f} (raw fp32 generate)", f"{s['decode'] / base['decode']:.2f}", ">= 3x, 50"),
            (f"whole answer p50, s ({label})", s["total"], f"{base['total']:.2f} (raw fp32 generate)", f"{s['total'] / base['total']:.2f}", "-"),
        ]
    rows.append(("retrieval p50, s (the engine's sources)", retrieval, f"{fielded:.3f} (retriever alone)", f"{retrieval / fielded:.2f}", "-"))
    print()
    print(
        f"{resolved.name} ({resolved.kind}); {len(questions)} questions, {settings.top_k} sources (the first of <= {settings.top_source_tokens or settings.source_tokens} "
        f"tokens, the others <= {settings.source_tokens}); "
        f"prompt {base['prompt']:.0f} tokens p50; answers {base['tokens']:.0f} tokens p50; greedy; {os.cpu_count()} CPU threads"
    )
    emit_rows(rows, args.json, target_width=9)
    return 0


if __name__ == "__main__":
    sys.exit(main())
