"""Typed settings: the single source of paths, model names and retrieval knobs.

Values come, highest priority first, from keyword arguments, ``MEDQA_*`` environment
variables, a ``.env`` file, a YAML/TOML file named by ``MEDQA_CONFIG`` (or passed to
:meth:`Settings.from_file`), and the defaults below.

Example::

    MEDQA_CORPUS=../shared/data/medquad MEDQA_LLM=storage/models/merged python -m rag_app ask "What is glaucoma?"
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

from rag_app.errors import SettingsError

#: The retrieval-aware fine-tune of the bundled model that this repository ships (a LoRA adapter, merged onto
#: the bundled SmolLM2-135M-Instruct on first use; ``finetune/adapters/smollm2-135m-raft/README.md`` says how it was made).
SHIPPED_LLM = str(Path(__file__).resolve().parents[1] / "finetune" / "adapters" / "smollm2-135m-raft")
DEFAULT_LLM = SHIPPED_LLM
#: The cross-encoder re-ranker this repository ships (``finetune/rerankers/minilm-medquad-rerank/README.md`` says how
#: it was made; ``python -m finetune.rerank`` trains it).
SHIPPED_RERANKER = str(Path(__file__).resolve().parents[1] / "finetune" / "rerankers" / "minilm-medquad-rerank")
DEFAULT_EMBED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
BUNDLED_LLM = "bundled:smollm2-135m-instruct"
#: Log-odds that a candidate from each MedQuAD collection is relevant to a real patient message, against the
#: average candidate: estimated over the LiveQA tune half's candidates by ``benchmarks/tune_liveqa.py`` (which
#: prints this table). NIH answers to patients drew on MedlinePlus, NIHSeniorHealth and NINDS more than on GARD.
MEDQUAD_SOURCE_PRIOR: dict[str, float] = {
    "1_CancerGov_QA": -0.84,
    "2_GARD_QA": -1.62,
    "3_GHR_QA": -0.24,
    "4_MPlus_Health_Topics_QA": 0.62,
    "5_NIDDK_QA": -1.12,
    "6_NINDS_QA": 0.62,
    "7_SeniorHealth_QA": 1.0,
    "8_NHLBI_QA_XML": -0.37,
    "9_CDC_QA": -0.27,
}


class Settings(BaseSettings):
    """All of medqa's configuration.

    Attributes mirror the ``MEDQA_<NAME>`` environment variables (case-insensitive).
    """

    model_config = SettingsConfigDict(
        env_prefix="MEDQA_",
        env_file=".env",
        extra="forbid",
        validate_default=True,
    )

    storage_dir: Path = Field(Path("storage"), description="Where the index, converted models, splits and reports live.")
    corpus: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["data/medquad"],
        description="Corpus sources: MedQuAD folders, seed-format CSV/Parquet files, dataset names or document folders; comma-separated in the environment.",
    )
    embed_model: str = Field(DEFAULT_EMBED_MODEL, description="sentence-transformers model name or local path.")
    embed_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Weights of the embedding model: 'bfloat16' (2.5x faster where the CPU has bfloat16 units, the same "
        "vectors to 3 decimals), 'float32' (the reference) or 'auto' (bfloat16 on such a CPU, else float32).",
    )
    llm: str = Field(
        DEFAULT_LLM,
        description="The model that answers: the shipped retrieval-aware fine-tune (default), 'bundled:smollm2-135m-instruct' "
        "(the base model), a hub id, a local HF model or LoRA adapter directory, or a .gguf file.",
    )
    finetuned_llm: str = Field(
        SHIPPED_LLM,
        description=(
            "The fine-tuned model the chat offers beside the base model and evaluation's `raft` system: a merged model "
            "or adapter folder (default: the shipped one; training writes runs/smollm2-135m-raft/merged)."
        ),
    )
    llm_api_base: Optional[str] = Field(
        None,
        description="OpenAI-compatible server (e.g. vLLM at http://127.0.0.1:8000/v1); when set, MEDQA_LLM is the served model's name.",
    )
    llm_api_key: str = Field("not-needed", description="API key for MEDQA_LLM_API_BASE (local servers ignore it).")
    device: str = Field("auto", description="'auto' (CUDA when present, else CPU), 'cpu' or 'cuda'.")
    llm_backend: Literal["auto", "llama.cpp", "transformers"] = Field(
        "auto",
        description="How answers are generated: 'llama.cpp' (16-bit GGUF weights, several times faster on a CPU), "
        "'transformers' (float PyTorch weights, the reference) or 'auto' (llama.cpp on a CPU when installed and the "
        "model has a GGUF, else transformers).",
    )
    offline_fallback: bool = Field(True, description="Fall back to the bundled SmolLM2 when the LLM can't be loaded.")

    chunk_size: int = Field(512, ge=32, description="Chunk size in tokens for the node parser.")
    chunk_overlap: int = Field(64, ge=0, description="Token overlap between consecutive chunks.")
    embed_batch_size: int = Field(
        16,
        ge=1,
        description="Passages per encoder batch. On 2 CPU cores 16 encoded faster than 64 in float32 and bfloat16 "
        "alike (`benchmarks/bench_index.py` prints both rates).",
    )
    embed_workers: int = Field(
        0,
        ge=0,
        description="Threads that encode side by side while the index is built, each on its share of the CPU cores: "
        "0 picks one per core on a CPU (at most 4) and 1 on a GPU. On 2 cores, two workers of one core each encode "
        "faster than one worker on both (`benchmarks/bench_index.py` prints both rates).",
    )
    collection: str = Field("medqa", description="Chroma collection name.")
    chroma_host: Optional[str] = Field(None, description="Chroma server host; server mode when set.")
    chroma_port: int = Field(8000, description="Chroma server port.")

    top_k: int = Field(3, ge=1, le=50, description="Sources handed to the LLM (one per QA pair).")
    candidate_k: int = Field(20, ge=1, description="Candidates each retriever returns before fusion.")
    source_tokens: int = Field(
        96, ge=16, description="Token budget of each source passage in the prompt after the first (top_source_tokens)."
    )
    top_source_tokens: Optional[int] = Field(
        256,
        ge=16,
        description="Token budget of the first (top) source passage, which answers mostly copy (None: source_tokens).",
    )
    retrieval_mode: str = Field(
        "fielded",
        description="'fielded' (chunk + question vectors, topic and question-type match), 'hybrid' (dense + BM25, RRF), 'dense' or 'bm25'.",
    )
    question_weight: float = Field(0.4, ge=0.0, le=1.0, description="fielded: share of the question-only cosine in the dense score.")
    focus_weight: float = Field(0.15, ge=0.0, description="fielded: weight of the topic (focus) named in the message.")
    type_weight: float = Field(0.15, ge=0.0, description="fielded: bonus of a QA pair whose question type the message asks for.")
    overview_weight: float = Field(0.1, ge=0.0, description="fielded: bonus of overview ('information') QA pairs.")
    overview_asked_weight: float = Field(
        0.1,
        ge=0.0,
        description="fielded: bonus of overview QA pairs when the message asks for a question type (treatment, causes, ...); "
        "lower favours the asked type's page over the overview (benchmarks/tune_liveqa.py --asked shows the trade-off).",
    )
    sentence_weight: float = Field(
        0.5, ge=0.0, le=1.0, description="fielded: share of the best single-sentence cosine (long messages) in each cosine."
    )
    source_weight: float = Field(0.06, ge=0.0, description="fielded: weight of the source prior (source_prior).")
    source_asked_weight: float = Field(
        0.06,
        ge=0.0,
        description="fielded: weight of the source prior for a QA pair of the question type the message asks for "
        "(benchmarks/tune_liveqa.py --asked shows the trade-off).",
    )
    same_question_limit: int = Field(
        1,
        ge=0,
        description="fielded: most QA pairs with the same source and question (one page split into parts, as "
        "NIHSeniorHealth's) among the results before the others, so that they don't fill the re-ranker's candidates; "
        "0: no limit (benchmarks/tune_liveqa.py --repeats measures it).",
    )
    typo_similarity: float = Field(
        0.8,
        ge=0.5,
        le=1.0,
        description="fielded: least similarity (rapidfuzz ratio / 100) of a word found on no indexed page to a topic-name "
        "word for it to count as that word misspelt ('mediterean' for Mediterranean); 1 reads no misspellings "
        "(benchmarks/tune_liveqa.py --typos chose it).",
    )
    correct_spelling: bool = Field(
        True,
        description="Retrieve and re-rank with misspelt topic names written as the index writes them "
        "('alzeimers' -> 'alzheimer'; rag_app.index.topics.FocusMatcher.corrected); needs MEDQA_TYPO_SIMILARITY < 1.",
    )
    ask_similarity: float = Field(
        0.6,
        ge=0.0,
        le=1.01,
        description="fielded: least cosine between a message's question and a plain way of asking for a question type "
        "(rag_app.text.asking) for that type to count as asked where no cue word says it (rag_app.index.asked); 1.01 "
        "reads cue words only. The strictest cutoff that reads more than cues: lower ones read more questions and more wrong "
        "types, and the dev sets can't tell them apart (benchmarks/tune_liveqa.py --ask-similarity).",
    )
    nearest_type_share: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="fielded: share of the type bonus for a QA pair of the type nearest the asked one (treatment for "
        "prevention, causes for who is at risk, ...) on a topic with no pair of the asked type. 0.5 changes no LiveQA "
        "tune-half ranking and moves Marfan syndrome's treatment page first for 'what can she do so she doesn't get "
        "heart problems?'.",
    )
    pointer_weight: float = Field(
        0.3,
        ge=0.0,
        description="fielded: taken off the score of a QA pair whose answer only points elsewhere (an address, a link, "
        "'more information is available at ...': rag_app.text.pointers), so a page with content comes first.",
    )
    source_prior: dict[str, float] = Field(
        default_factory=lambda: dict(MEDQUAD_SOURCE_PRIOR),
        description="fielded: log-odds that a candidate from each source collection answers a real patient message "
        "(JSON object; collections not named count 0).",
    )

    rerank: bool = Field(True, description="Re-rank the retriever's top candidates with the cross-encoder (rag_app.retrieval.rerank).")
    rerank_model: str = Field(SHIPPED_RERANKER, description="The re-ranker: a sentence-transformers CrossEncoder folder (default: the shipped one).")
    rerank_candidates: int = Field(10, ge=1, le=200, description="Retriever candidates the re-ranker reads (its cost grows with them).")
    rerank_reads_asked: bool = Field(
        True,
        description="The re-ranker reads the message with the question types it asks (cue words or the nearest way of "
        "asking, rag_app.index.asked) asked plainly after it ('... What brings it on? What causes it?').",
    )
    rerank_dtype: Literal["auto", "float32", "bfloat16", "int8"] = Field(
        "auto",
        description="The re-ranker's weights: 'auto' (bfloat16 on a CPU with bfloat16 units, int8 linear layers on other "
        "CPUs, float32 on a GPU), 'float32', 'bfloat16' or 'int8'.",
    )
    rerank_weight: float = Field(
        0.2, ge=0.0, description="Weight of the re-ranker's probability beside the retriever's score (benchmarks/tune_liveqa.py chooses it)."
    )

    answer_threshold: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Re-ranker probability from which the top source counts as answering the question: the answer is never declined.",
    )
    answer_from_sentence: bool = Field(
        True, description="Show the model the top source from the sentence that answers the question (the re-ranker chooses it)."
    )
    sentence_margin: float = Field(1.0, ge=0.0, description="Logit margin by which a later sentence must beat the page's first to open the answer.")

    max_new_tokens: int = Field(256, ge=1)
    finish_source: bool = Field(
        True,
        description="An answer copying its top source may not end while the source (as shown) goes on "
        "(rag_app.text.openings.Opening.banned); off: it ends where the model ends it.",
    )
    copy_bias: float = Field(
        6.0,
        ge=0.0,
        description="Logits added to the token the top source goes on with while an answer copies it word for word "
        "(rag_app.text.openings.Opening.copying): the 135M model copying 'a condition called diverticulitis' now and "
        "then writes 'diverticulosis', or 'type 1' for the source's 'type 2' (3 still let that through); leaving the "
        "source stays its choice where it prefers another token by more. 0 turns it off.",
    )
    decline_bias: float = Field(
        4.0,
        ge=0.0,
        description="Logits taken from the decline's first token where the model chooses between declining and opening "
        "with its top source (the topic names leave it open): it declines only where it prefers that by more. "
        "benchmarks/tune_declines.py measures it on dev sets.",
    )
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 means greedy decoding.")
    context_window: int = Field(2048, ge=256, description="Prompt + answer token budget.")
    max_question_tokens: int = Field(256, ge=8, description="Longer questions are truncated with a warning.")
    medical_notice: bool = Field(True, description="Append the not-medical-advice notice to answers.")
    decline_by_topic: bool = Field(
        True,
        description="Decline when the question names a topic and no source is about it; otherwise never start by declining.",
    )
    stop_on_repeat: bool = Field(
        True, description="Stop an answer once it repeats a sentence and drop the repeat (rag_app.text.repetition); never loops."
    )
    attribute_citations: bool = Field(
        True, description="Renumber a citation [n] to the source its text was copied from (rag_app.text.citations.attribute_citations)."
    )
    open_with_top_source: Literal["auto", "on", "off"] = Field(
        "auto",
        description=(
            "Make answers open with the top source's first words (rag_app.llm.decoding.answer_opening); "
            "auto: for retrieval-aware fine-tunes only."
        ),
    )

    @field_validator("corpus", mode="before")
    @classmethod
    def _split_corpus(cls, value: Any) -> list[str]:
        if value is None:
            return []
        if isinstance(value, (str, Path)):
            return [part.strip() for part in str(value).split(",") if part.strip()]
        return [str(v) for v in value]

    @field_validator("retrieval_mode")
    @classmethod
    def _check_mode(cls, value: str) -> str:
        if value not in {"fielded", "hybrid", "dense", "bm25"}:
            raise ValueError(f"retrieval_mode={value!r} is not one of 'fielded', 'hybrid', 'dense', 'bm25'")
        return value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if value not in {"auto", "cpu", "cuda"} and not value.startswith("cuda:"):
            raise ValueError(f"device={value!r}: use 'auto', 'cpu' or 'cuda'")
        return value

    @model_validator(mode="after")
    def _check_chunking(self) -> "Settings":
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"chunk_overlap={self.chunk_overlap} must be smaller than chunk_size={self.chunk_size}"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        config_file = os.environ.get("MEDQA_CONFIG")
        if config_file:
            sources.append(_file_source(settings_cls, Path(config_file)))
        return tuple(sources)

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> "Settings":
        """Load settings from a YAML or TOML file; environment and ``overrides`` win.

        Args:
            path: A ``.yaml``/``.yml`` or ``.toml`` file whose keys are field names.
            **overrides: Field values that take precedence over everything else.

        Raises:
            ValueError: If the file does not exist or has another suffix.
        """
        path = Path(path)
        _file_source(cls, path)  # validates path and suffix
        previous = os.environ.get("MEDQA_CONFIG")
        os.environ["MEDQA_CONFIG"] = str(path)
        try:
            return cls(**overrides)
        finally:
            if previous is None:
                os.environ.pop("MEDQA_CONFIG", None)
            else:
                os.environ["MEDQA_CONFIG"] = previous

    # ---- derived paths -------------------------------------------------
    @property
    def chroma_dir(self) -> Path:
        """Folder of the embedded Chroma database."""
        return self.storage_dir / "chroma"

    @property
    def models_dir(self) -> Path:
        """Folder of converted model checkpoints (e.g. GGUF → safetensors)."""
        return self.storage_dir / "models"

    @property
    def docstore_path(self) -> Path:
        """Document-hash store that makes indexing incremental."""
        where = f"{self.chroma_host}_{self.chroma_port}_" if self.chroma_host else ""
        return self.storage_dir / "docstore" / f"{where}{self.collection}.json"

    @property
    def server_mode(self) -> bool:
        """True when a Chroma server is configured."""
        return bool(self.chroma_host)


def _file_source(settings_cls: type[BaseSettings], path: Path) -> PydanticBaseSettingsSource:
    if not path.is_file():
        raise SettingsError(f"settings file {str(path)!r} does not exist; fix MEDQA_CONFIG or the path you passed")
    suffix = path.suffix.lower()
    if suffix in {".yaml", ".yml"}:
        return YamlConfigSettingsSource(settings_cls, yaml_file=path)
    if suffix == ".toml":
        return TomlConfigSettingsSource(settings_cls, toml_file=path)
    raise SettingsError(f"settings file {str(path)!r} must end in .yaml, .yml or .toml")


def get_settings(**overrides: Any) -> Settings:
    """Return settings from the environment (and ``MEDQA_CONFIG``), with ``overrides`` applied."""
    return Settings(**overrides)


def load_settings(config: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings for an entry point: the environment, an optional YAML/TOML file and ``overrides``.

    Raises:
        SettingsError: One line per bad value, naming the ``MEDQA_*`` variable (or file key) and what it must be.
    """
    try:
        return Settings.from_file(config, **overrides) if config else Settings(**overrides)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            name = ".".join(str(p) for p in e.get("loc", ())) or "settings"
            value = f"={e['input']!r}" if "input" in e and not isinstance(e["input"], dict) else ""
            problems.append(f"MEDQA_{name.upper()}{value}: {e.get('msg', 'invalid')}")
        raise SettingsError("; ".join(problems) + " (fix the variable, the config file or the option)") from None
