"""Write an evaluation report: report.md, metrics.json (flat, DVC-friendly), details.jsonl, PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

#: Per-question ROUGE-L scatter plots (x system, y system, file), drawn when both systems ran.
SCATTERS = (("ft", "ft+rag", "scatter_ft_vs_ft_rag.png"), ("ft+rag", "raft+rag", "scatter_ft_rag_vs_raft_rag.png"))
ANSWER_METRICS = (
    "rouge1", "rouge2", "rougeL", "grounding", "citation_accuracy", "citation_support", "abstention", "repetition", "words", "ragas_faithfulness", "ragas_response_relevancy",
)


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _pct(new: float, old: float) -> str:
    if any(v is None or math.isnan(v) for v in (new, old)) or old == 0:
        return ""
    return f" ({(new - old) / old * 100:+.0f}%)"


def metric_table(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown table metric × system: mean (% change vs the first system) and 95% CI."""
    systems = list(summary)
    baseline = systems[0]
    lines = [
        f"| metric | {' | '.join(systems)} |",
        "|---|" + "---|" * len(systems),
    ]
    for metric in ANSWER_METRICS:
        if not any(metric in summary[s] for s in systems):
            continue
        cells = []
        for s in systems:
            stat = summary[s].get(metric)
            if stat is None:
                cells.append("–")
                continue
            base = summary[baseline].get(metric, {}).get("mean", math.nan)
            change = _pct(stat["mean"], base) if s != baseline else ""
            cells.append(f"{_fmt(stat['mean'])}{change} [{_fmt(stat['ci_low'])}, {_fmt(stat['ci_high'])}]")
        lines.append(f"| {metric} | {' | '.join(cells)} |")
    return "\n".join(lines)


def flat_metrics(summary: dict[str, Any], retrieval: dict[str, Any], tests: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Flat ``{"system/metric": value}`` keys for DVC metrics."""
    flat: dict[str, float] = {}
    for system, metrics in summary.items():
        for metric, stat in metrics.items():
            for key in ("mean", "ci_low", "ci_high"):
                value = stat[key]
                flat[f"{system}/{metric}" + ("" if key == "mean" else f"_{key}")] = None if math.isnan(value) else round(value, 6)
    for metric, stat in retrieval.items():
        flat[f"retrieval/{metric}"] = None if math.isnan(stat["mean"]) else round(stat["mean"], 6)
    for t in tests:
        flat[f"p/{t['a']}_vs_{t['b']}/{t['metric']}"] = round(t["p"], 6)
    return flat


def write_report(
    out_dir: Path,
    summary: dict[str, Any],
    retrieval: dict[str, Any],
    tests: Sequence[dict[str, Any]],
    details: Sequence[dict[str, Any]],
    per_q: dict[str, dict[str, list[float]]],
    context: dict[str, Any],
    plots: bool = True,
) -> str:
    """Write every report file into ``out_dir`` and return the table printed to the terminal."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = metric_table(summary)
    lines = [
        "# medqa evaluation",
        "",
        f"- Questions: {context['question_note']}, "
        f"seed {context['args']['seed']}, greedy decoding, max {context['args']['max_new_tokens']} new tokens.",
        f"- Index: {context['index_note']}.",
        f"- Wall time: {context['seconds']:.0f} s.",
        "",
        "## Systems",
        "",
        "| system | model | backend | RAG | top-k |",
        "|---|---|---|---|---|",
    ]
    for s in context["systems"]:
        info = context["models"].get(s["name"], {})
        model = info.get("name", s["model"]) + (" (fallback: configured model unavailable)" if info.get("fallback") else "")
        backend = info.get("backend", "–")
        lines.append(f"| {s['name']} | {model} | {backend} | {'yes' if s['rag'] else 'no'} | {s['top_k'] if s['rag'] else '–'} |")
    lines += ["", "## Answers", "", "Mean (change vs the first system) [95% bootstrap CI].", "", table, ""]
    for subset, sub_summary in context.get("subsets", {}).items():
        lines += [f"### Subset: {subset} ({next(iter(sub_summary.values()))['abstention']['n']} questions)", "", metric_table(sub_summary), ""]
    if tests:
        lines += ["## Paired bootstrap tests", "", "| A vs B | metric | mean(A) − mean(B) | p |", "|---|---|---|---|"]
        lines += [f"| {t['a']} vs {t['b']} | {t['metric']} | {t['diff']:+.4f} | {t['p']:.4f} |" for t in tests]
        lines.append("")
    if retrieval:
        lines += ["## Retrieval (shared by all RAG systems)", "", "| metric | mean [95% CI] |", "|---|---|"]
        lines += [f"| {m} | {_fmt(s['mean'])} [{_fmt(s['ci_low'])}, {_fmt(s['ci_high'])}] |" for m, s in retrieval.items()]
        lines.append("")
    lines += [
        "## How the metrics are computed",
        "",
        "- ROUGE-1/2/L: F1 from `rouge-score` with Porter stemming, answer vs reference answer (vs the best-matching "
        "one where a question has several).",
        "- words: answer length in whitespace-separated words.",
        "- repetition: share of answers that repeat themselves: a complete sentence of 4+ words said again (case and "
        "punctuation aside), or a run of 12 words said twice in a row (`rag_app.text.repetition.repeats`).",
        "- grounding (RAG systems, no judge): the answer, citation markers removed, is split into sentences; for each "
        "sentence with 3+ content words (lower-case alphanumeric tokens of 3+ characters, minus stop words), support "
        "is the share of its content words found in the passages shown to the model; the score is the mean support.",
        "- citation_accuracy: share of answers whose first cited [n] is a relevant QA pair (the test question's own "
        "pair; for LiveQA, a pair holding a reference answer), among questions where one was retrieved.",
        "- citation_support: share of an answer's citations [n] (each closing the text since the previous one, 3+ "
        "content words) whose source n holds at least half of that text's content words; the mean over answers that cite.",
        "- abstention: share of answers that decline (\"I don't know\", \"the sources don't cover ...\").",
        "- Retrieval: hit/MRR/nDCG@k of the question's own QA pair (`pair_`) and of any pair from its source "
        "document (`document_`); ragas judge-free context precision/recall (string similarity to the reference "
        "passage, and by id).",
        "",
    ]
    if context["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in context["notes"]] + [""]
    if plots:
        lines += ["## Plots", "", "![ROUGE](rouge.png)", ""]
        lines += [f"![{x} vs {y}]({name})\n" for x, y, name in SCATTERS if x in per_q and y in per_q]
    (out_dir / "report.md").write_text("\n".join(lines), encoding="utf-8")
    flat = flat_metrics(summary, retrieval, tests)
    for subset, sub_summary in context.get("subsets", {}).items():
        flat.update({f"{subset}/{k}": v for k, v in flat_metrics(sub_summary, {}, []).items()})
    (out_dir / "metrics.json").write_text(json.dumps(flat, indent=2), encoding="utf-8")
    with (out_dir / "details.jsonl").open("w", encoding="utf-8") as handle:
        for row in details:
            handle.write(json.dumps(row, ensure_ascii=False, default=_nan_to_none) + "\n")
    if plots:
        _plots(out_dir, summary, per_q)
    return table


def _nan_to_none(value: Any) -> Any:
    return None


def _plots(out_dir: Path, summary: dict[str, Any], per_q: dict[str, dict[str, list[float]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    systems = list(summary)
    metrics = ["rouge1", "rouge2", "rougeL"]
    width = 0.8 / len(systems)
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, s in enumerate(systems):
        means = [summary[s][m]["mean"] for m in metrics]
        err = [[summary[s][m]["mean"] - summary[s][m]["ci_low"] for m in metrics], [summary[s][m]["ci_high"] - summary[s][m]["mean"] for m in metrics]]
        ax.bar(np.arange(len(metrics)) + i * width, means, width, yerr=err, capsize=3, label=s)
    ax.set_xticks(np.arange(len(metrics)) + width * (len(systems) - 1) / 2, metrics)
    ax.set_ylabel("F1 (95% bootstrap CI)")
    ax.legend(fontsize=8)
    ax.set_title("ROUGE by system")
    fig.tight_layout()
    fig.savefig(out_dir / "rouge.png", dpi=120)
    plt.close(fig)
    for x, y, name in SCATTERS:
        if x not in per_q or y not in per_q:
            continue
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        ax.scatter(per_q[x]["rougeL"], per_q[y]["rougeL"], s=10, alpha=0.6)
        ax.plot([0, 1], [0, 1], color="grey", lw=1)
        ax.set_xlabel(f"{x} ROUGE-L")
        ax.set_ylabel(f"{y} ROUGE-L")
        ax.set_title("Per-question ROUGE-L")
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=120)
        plt.close(fig)
