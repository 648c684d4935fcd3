"""Shared fixtures: a small MedQuAD-format corpus, isolated settings, bundled models loaded once."""

from __future__ import annotations

import importlib.util
import os
import sys
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

REPO = Path(__file__).resolve().parents[1]
SHARED_MEDQUAD = REPO.parent / "shared" / "data" / "medquad"

TOPICS = {
    "Glaucoma": (
        "Glaucoma is a group of diseases that damage the optic nerve and can cause vision loss and blindness. "
        "Open-angle glaucoma is the most common form; eye pressure is often raised.",
        "Glaucoma is treated with prescription eye drops, laser trabeculoplasty, or conventional surgery "
        "to lower the pressure in the eye.",
    ),
    "Gout": (
        "Gout is a form of arthritis caused by uric acid crystals in a joint, often the big toe, "
        "with sudden attacks of pain, swelling and redness.",
        "Gout attacks are treated with nonsteroidal anti-inflammatory drugs, colchicine or corticosteroids; "
        "allopurinol lowers uric acid over time.",
    ),
    "Asthma": (
        "Asthma is a chronic disease that inflames and narrows the airways of the lungs, causing wheezing, "
        "chest tightness, shortness of breath and coughing.",
        "Asthma is controlled with inhaled corticosteroids and quick-relief bronchodilator inhalers such as albuterol.",
    ),
    "Anemia": (
        "Anemia is a condition in which the blood has a lower than normal number of red blood cells or "
        "too little hemoglobin, causing fatigue and pale skin.",
        "Treatment of anemia depends on the cause: iron supplements for iron-deficiency anemia, "
        "vitamin B12 injections, or blood transfusions.",
    ),
}


def _medquad_xml(doc_id: str, focus: str, what: str, treat: str, url: str) -> str:
    return textwrap.dedent(
        f"""\
        <?xml version="1.0" encoding="UTF-8"?>
        <Document id="{doc_id}" source="Test" url="{url}">
        <Focus>{focus}</Focus>
        <QAPairs>
        	<QAPair pid="1">
        		<Question qid="{doc_id}-1" qtype="information">What is (are) {focus} ?</Question>
        		<Answer>{what}</Answer>
        	</QAPair>
        	<QAPair pid="2">
        		<Question qid="{doc_id}-2" qtype="treatment">What are the treatments for {focus} ?</Question>
        		<Answer>{treat}</Answer>
        	</QAPair>
        	<QAPair pid="3">
        		<Question qid="{doc_id}-3" qtype="research">what research (or clinical trials) is being done for {focus} ?</Question>
        		<Answer></Answer>
        	</QAPair>
        </QAPairs>
        </Document>
        """
    )


def write_medquad(root: Path) -> Path:
    """A MedQuAD-format tree: 2 collections, 4 documents (8 answered pairs, 4 unanswered), 1 malformed file."""
    items = list(TOPICS.items())
    for c, collection in enumerate(["1_TestA_QA", "2_TestB_QA"]):
        folder = root / collection
        folder.mkdir(parents=True, exist_ok=True)
        for i, (focus, (what, treat)) in enumerate(items[2 * c : 2 * c + 2], start=1):
            doc_id = f"000000{i}"
            url = f"https://www.nih.gov/test/{focus.lower()}"
            (folder / f"{doc_id}.xml").write_text(_medquad_xml(doc_id, focus, what, treat, url), encoding="utf-8")
    (root / "2_TestB_QA" / "0000009.xml").write_text("<Document><QAPairs><QAPair>broken", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def bench(request: pytest.FixtureRequest):
    """The benchmark script a test module names in ``BENCHMARK`` (``benchmarks/<name>.py``), imported as a module."""
    name = request.module.BENCHMARK
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(name, None)


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the caller's MEDQA_* settings (e.g. the Makefile's MEDQA_CORPUS)."""
    for key in list(os.environ):
        if key.startswith("MEDQA_") and key != "MEDQA_TEST_MODEL_CACHE":
            monkeypatch.delenv(key)


@pytest.fixture()
def medquad_dir(tmp_path: Path) -> Path:
    """A fresh small MedQuAD-format corpus."""
    return write_medquad(tmp_path / "medquad")


@pytest.fixture()
def settings(tmp_path: Path, medquad_dir: Path):
    """Settings isolated in a temp storage dir, over the small corpus."""
    from rag_app.config import Settings

    return Settings(storage_dir=tmp_path / "storage", corpus=[str(medquad_dir)], chunk_size=128, chunk_overlap=16)


@pytest.fixture(scope="session")
def embed_model():
    """The bundled all-MiniLM-L6-v2 (real weights), loaded once."""
    from rag_app.config import Settings
    from rag_app.llm.load import load_embed_model

    return load_embed_model(Settings())


@pytest.fixture(scope="session")
def bundled_llm_dir(tmp_path_factory) -> Path:
    """The bundled SmolLM2-135M-Instruct converted to a HF checkpoint once per session."""
    from rag_app.config import Settings
    from rag_app.llm.resolve import bundled_llm

    storage = Path(os.environ.get("MEDQA_TEST_MODEL_CACHE", tmp_path_factory.mktemp("models-cache")))
    return bundled_llm(Settings(storage_dir=storage)).path


@pytest.fixture(scope="session")
def bundled_llm_model(bundled_llm_dir: Path):
    """The bundled LLM wrapped for LlamaIndex, short answers, loaded once."""
    from rag_app.config import Settings
    from rag_app.llm.load import load_llm

    return load_llm(Settings(llm=str(bundled_llm_dir), max_new_tokens=48))


@pytest.fixture()
def tiny_model_dir(tmp_path: Path, bundled_llm_dir: Path) -> Path:
    """A 2-layer random Llama with the bundled SmolLM2 tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(bundled_llm_dir)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
    )
    out = tmp_path / "tiny"
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
