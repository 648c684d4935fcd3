"""Corpus loaders: counts, metadata, stable ids and skip-and-report on bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from corpus import CorpusError, load_corpus
from corpus.medquad import METADATA_KEYS
from tests.conftest import SHARED_MEDQUAD


def test_medquad_fixture_counts_and_metadata(medquad_dir: Path) -> None:
    docs, report = load_corpus([str(medquad_dir)])
    assert len(docs) == 8 and report.loaded == 8
    assert report.unanswered == 4
    assert [Path(p).name for p, _ in report.problems] == ["0000009.xml"]
    assert "malformed XML" in report.problems[0][1]
    doc = next(d for d in docs if d.metadata["focus"] == "Gout" and d.metadata["question_type"] == "treatment")
    assert set(METADATA_KEYS) <= set(doc.metadata)
    assert doc.metadata["collection"] == "1_TestA_QA"
    assert doc.metadata["question_id"] == "0000002-2"
    assert doc.metadata["url"] == "https://www.nih.gov/test/gout"
    assert doc.text.startswith("Question: What are the treatments for Gout ?\nAnswer: Gout attacks")
    assert doc.id_ == "medquad/1_TestA_QA/0000002/0000002-2"


def test_ids_are_stable_between_loads(medquad_dir: Path) -> None:
    first, _ = load_corpus([str(medquad_dir)])
    second, _ = load_corpus([str(medquad_dir)])
    assert [d.id_ for d in first] == [d.id_ for d in second]
    assert [d.hash for d in first] == [d.hash for d in second]
    # one source given as a plain string or path is that source, not a list of one-character paths
    assert [d.id_ for d in load_corpus(str(medquad_dir))[0]] == [d.id_ for d in load_corpus(medquad_dir)[0]] == [d.id_ for d in first]


def _load_one_file(tmp_path: Path, collection: str, xml: str):
    """The single Document of a one-file MedQuAD tree holding ``xml``."""
    folder = tmp_path / "mq" / collection
    folder.mkdir(parents=True)
    (folder / "0000001.xml").write_text(xml, encoding="utf-8")
    (doc,), _ = load_corpus([str(tmp_path / "mq")])
    return doc


def test_entities_are_unescaped(tmp_path: Path) -> None:
    doc = _load_one_file(
        tmp_path,
        "1_X_QA",
        '<?xml version="1.0"?><Document id="1" url="u"><Focus>Crohn&apos;s</Focus><QAPairs><QAPair pid="1">'
        '<Question qid="1-1" qtype="information">What is Crohn&apos;s disease ?</Question>'
        "<Answer>It is &quot;inflammatory&quot; &amp;amp; chronic &lt;IBD&gt;.</Answer></QAPair></QAPairs></Document>",
    )
    assert doc.metadata["focus"] == "Crohn's"
    assert 'It is "inflammatory" & chronic <IBD>.' in doc.text


def test_topic_synonyms_are_kept_as_metadata(tmp_path: Path) -> None:
    doc = _load_one_file(
        tmp_path,
        "3_GHR_QA",
        '<?xml version="1.0"?><Document id="1" url="u"><Focus>ataxia-telangiectasia</Focus><FocusAnnotations>'
        "<Synonyms><Synonym>Louis-Bar syndrome</Synonym><Synonym>AT</Synonym><Synonym>Louis-Bar syndrome</Synonym>"
        "<Synonym>Ataxia-Telangiectasia</Synonym></Synonyms></FocusAnnotations><QAPairs><QAPair pid=\"1\">"
        '<Question qid="1-1" qtype="inheritance">Is ataxia-telangiectasia inherited ?</Question>'
        "<Answer>Autosomal recessive.</Answer></QAPair></QAPairs></Document>",
    )
    assert doc.metadata["synonyms"] == "Louis-Bar syndrome | AT"  # once each, not the focus itself
    assert "Louis-Bar" not in doc.get_content(metadata_mode="embed")  # metadata stays out of the embedded text


def test_folder_of_files_reports_non_utf8(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("Diabetes is a disease of high blood sugar.", encoding="utf-8")
    (folder / "b.md").write_text("# Flu\nInfluenza is a contagious respiratory illness.", encoding="utf-8")
    (folder / "c.txt").write_bytes("Caf\xe9 latte and caffeine.".encode("latin-1"))
    docs, report = load_corpus([str(folder)])
    assert {d.metadata["document_id"] for d in docs} == {"a.txt", "b.md", "c.txt"}
    assert any(p.endswith("c.txt") and "UTF-8" in why for p, why in report.problems)
    assert all(d.id_.startswith("files/notes/") for d in docs)


def test_seed_format_csv(tmp_path: Path) -> None:
    path = tmp_path / "seed.csv"
    path.write_text(
        "Description,Patient,Doctor\n"
        '"Q. What causes migraines?","Hi doctor, I get headaches every week.","Hi. Migraines have many triggers."\n'
        '"Q. Empty answer","text",""\n',
        encoding="utf-8",
    )
    docs, report = load_corpus([str(path)])
    assert len(docs) == 1 and report.unanswered == 1
    assert "Migraines have many triggers" in docs[0].text
    assert docs[0].metadata["question"] == "Q. What causes migraines?"


def test_seed_file_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("question,answer\nq,a\n", encoding="utf-8")
    with pytest.raises(ValueError, match="Description"):
        load_corpus([str(path)])


def test_missing_corpus_names_download_command(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="corpus.download medquad"):
        load_corpus([str(tmp_path / "nope")])
    with pytest.raises(CorpusError, match="no corpus configured"):
        load_corpus([])


def test_default_corpus_path_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default 'data/medquad' also reads like a hub dataset name; offline it must still say what to do."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(CorpusError, match="corpus.download medquad"):
        load_corpus(["data/no-such-medquad"])


@pytest.mark.skipif(not SHARED_MEDQUAD.is_dir(), reason="MedQuAD not present in ../shared")
def test_full_medquad_counts() -> None:
    docs, report = load_corpus([str(SHARED_MEDQUAD)])
    # 12 collections; 3 MedlinePlus collections have their answers removed by NIH.
    assert len(docs) == 16423
    assert report.unanswered == 31034
    assert report.skipped == 0
    assert len({d.id_ for d in docs}) == len(docs)
    assert {d.metadata["collection"] for d in docs} == {
        "1_CancerGov_QA", "2_GARD_QA", "3_GHR_QA", "4_MPlus_Health_Topics_QA", "5_NIDDK_QA",
        "6_NINDS_QA", "7_SeniorHealth_QA", "8_NHLBI_QA_XML", "9_CDC_QA",
    }
