"""LiveQA loader and derived relevance labels (n-gram containment)."""

from __future__ import annotations

from pathlib import Path

import pytest

from corpus.errors import CorpusError
from corpus.liveqa import derive_labels, load_liveqa

REPO = Path(__file__).resolve().parents[1]
SHARED_LIVEQA = REPO.parent / "shared" / "data" / "liveqa-train"

XML = """\ufeff<?xml version="1.0" encoding="UTF-8"?>
<NLM-QUESTIONS>
<NLM-QUESTION qid="1.0">
  <SUBJECT>gout pain</SUBJECT>
  <MESSAGE>my big toe   hurts, what can I take for gout?</MESSAGE>
  <SUB-QUESTIONS><SUB-QUESTION><ANNOTATIONS><FOCUS>gout</FOCUS><TYPE>treatment</TYPE></ANNOTATIONS>
  <ANSWERS><ANSWER>Gout attacks are treated with nonsteroidal anti-inflammatory drugs, colchicine or corticosteroids.</ANSWER></ANSWERS>
  </SUB-QUESTION></SUB-QUESTIONS>
</NLM-QUESTION>
<NLM-QUESTION qid="2.0">
  <SUBJECT></SUBJECT>
  <MESSAGE>Is there a cure for hiccups?</MESSAGE>
  <SUB-QUESTIONS><SUB-QUESTION><ANNOTATIONS><FOCUS>hiccups</FOCUS><TYPE>treatment</TYPE></ANNOTATIONS>
  <ANSWERS><ANSWER>Most hiccups go away on their own within a few minutes without any treatment at all.</ANSWER></ANSWERS>
  </SUB-QUESTION></SUB-QUESTIONS>
</NLM-QUESTION>
</NLM-QUESTIONS>
"""


def test_query_and_labels_by_containment(tmp_path: Path) -> None:
    path = tmp_path / "TREC-2017-LiveQA-Medical-Train-2.xml"
    path.write_text(XML, encoding="utf-8")
    questions = load_liveqa([tmp_path])
    assert [q.qid for q in questions] == ["2:1.0", "2:2.0"]
    assert questions[0].query == "gout pain. my big toe hurts, what can I take for gout?"
    assert questions[0].focus == ["gout"] and questions[0].types == ["treatment"]
    pairs = {
        # contains every 5-gram of the reference answer, inside a longer answer → relevant
        "gout-treat": "In short: gout attacks are treated with nonsteroidal anti-inflammatory drugs, colchicine or "
        "corticosteroids. Allopurinol lowers uric acid over time.",
        # shares words and a few 5-grams, far below 80% → not relevant
        "gout-what": "Gout attacks are painful. They are treated in many ways by doctors.",
        # about hiccups but written differently → not relevant
        "hiccup": "Hiccups usually stop by themselves; breathing into a paper bag may help.",
    }
    labels = derive_labels(questions, pairs)
    assert labels == {"2:1.0": {"gout-treat"}}


def test_missing_path_names_download_command(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="corpus.download liveqa-train"):
        load_liveqa([tmp_path / "nope"])


@pytest.mark.skipif(not SHARED_LIVEQA.is_dir(), reason="LiveQA training questions not present in ../shared")
def test_real_liveqa_files_load() -> None:
    questions = load_liveqa([SHARED_LIVEQA])
    assert len(questions) == 446 and len({q.qid for q in questions}) == 446
    assert all(q.answers for q in questions)
    assert all(q.subject or q.message for q in questions)  # two messages are empty, their subject holds the question
