"""Fine-tuning: splits, chat encoding, LoRA training, merge, resume, accelerate, bad input.

Everything runs offline on a tiny random Qwen2 model with a small byte-level BPE tokenizer and a ChatML
template, built in fixtures, and on a small synthetic MedQuAD-format corpus.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")

REPO = Path(__file__).resolve().parents[1]
TINY_RECIPE = REPO / "finetune" / "recipes" / "tiny.yaml"
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
WORDS = (
    "symptoms include fever pain swelling fatigue nausea the disease is caused by genetic changes in cells "
    "treatment may involve medicine surgery therapy doctors diagnose with blood tests imaging and exams "
    "people with this condition should see a health professional early care helps outcomes"
).split()


# ---- fixtures --------------------------------------------------------------------------------------------------


def _answer(i: int, n_words: int) -> str:
    return " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(n_words)) + "."


def write_medquad(root: Path, n_focus: int = 24) -> Path:
    """A MedQuAD-format corpus: two collections sharing some topics, repeated questions, one very long answer."""
    for c, collection in enumerate(("1_TestA_QA", "2_TestB_QA")):
        folder = root / collection
        folder.mkdir(parents=True)
        for f in range(n_focus):
            if c == 1 and f % 3:  # collection B repeats every third topic of A
                continue
            focus = f"Disease {f}"
            qtypes = ["information", "symptoms", "treatment"]
            pairs = []
            for q, qtype in enumerate(qtypes):
                question = {
                    "information": f"What is (are) {focus} ?",
                    "symptoms": f"What are the symptoms of {focus} ?",
                    "treatment": f"What are the treatments for {focus} ?",
                }[qtype]
                n_words = 400 if (f == 0 and q == 0) else 8 + (f * 5 + q * 3) % 30
                pairs.append(
                    f'<QAPair pid="{q + 1}"><Question qid="{f:07d}-{q + 1}" qtype="{qtype}">{question}</Question>'
                    f"<Answer>{focus}: {_answer(f + q + c, n_words)}</Answer></QAPair>"
                )
            pairs.append(f'<QAPair pid="9"><Question qid="{f:07d}-9" qtype="outlook">Outlook of {focus}?</Question><Answer></Answer></QAPair>')
            (folder / f"{f:07d}.xml").write_text(
                f'<?xml version="1.0" encoding="UTF-8"?>\n<Document id="{c}{f:06d}" source="Test" url="https://example.org/{c}/{f}">\n'
                f"<Focus>{focus}</Focus>\n<QAPairs>\n" + "\n".join(pairs) + "\n</QAPairs>\n</Document>\n",
                encoding="utf-8",
            )
    return root


def build_tiny_model(path: Path) -> Path:
    """A 2-layer random Qwen2 with a ~400-token byte-level BPE tokenizer and a ChatML chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from rag_app.text.prompts import PLAIN_SYSTEM_PROMPT

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    texts = [PLAIN_SYSTEM_PROMPT, " ".join(WORDS), "What is (are) Disease 1 ? What are the symptoms treatments for"] * 20
    bpe.train_from_iterator(
        texts,
        trainers.BpeTrainer(vocab_size=420, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None, unk_token=None
    )
    tokenizer.chat_template = CHATML
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Tiny model, mini corpus and a storage dir with splits prepared once."""
    from finetune.data import SplitArguments, prepare_splits

    root = tmp_path_factory.mktemp("finetune")
    model = build_tiny_model(root / "tiny-model")
    corpus = write_medquad(root / "medquad")
    storage = root / "storage"
    split_dir, manifest = prepare_splits(
        SplitArguments(corpus=[str(corpus)], storage_dir=str(storage), val_fraction=0.12, test_fraction=0.12), show_progress=False
    )
    return {"root": root, "model": model, "corpus": corpus, "storage": storage, "splits": split_dir, "manifest": manifest}


def tiny_argv(ws, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--config", str(TINY_RECIPE),
        "--model_name_or_path", str(ws["model"]),
        "--corpus", str(ws["corpus"]),
        "--storage_dir", str(ws["storage"]),
        "--val_fraction", "0.12",
        "--test_fraction", "0.12",
        "--output_dir", str(output_dir),
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def trained(workspace):
    """One tiny training run (4 steps, merged at the end)."""
    from finetune.train import run

    out = workspace["root"] / "run"
    summary = run(tiny_argv(workspace, out))
    return {"summary": summary, "out": out, **workspace}


# ---- data ------------------------------------------------------------------------------------------------------


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_splits_are_leakage_free_and_documented(workspace):
    from finetune.data import EXAMPLE_KEYS, content_hash, group_key, normalize_question

    split_dir, manifest = workspace["splits"], workspace["manifest"]
    rows = {name: _read(split_dir / f"{name}.jsonl") for name in ("train", "val", "test")}
    assert all(rows.values()), {k: len(v) for k, v in rows.items()}
    questions = {name: {normalize_question(r["question"]) for r in v} for name, v in rows.items()}
    groups = {name: {group_key(r) for r in v} for name, v in rows.items()}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not questions[a] & questions[b], f"question overlap between {a} and {b}"
        assert not groups[a] & groups[b], f"focus group overlap between {a} and {b}"
    all_q = [normalize_question(r["question"]) for v in rows.values() for r in v]
    assert len(all_q) == len(set(all_q)), "identical questions must be de-duplicated"
    assert manifest["stats"]["duplicates_removed"] > 0
    assert manifest["counts"] == {k: len(v) for k, v in rows.items()}
    assert manifest["content_hash"] == content_hash(split_dir)
    assert manifest["seed"] == 42 and manifest["source"]
    for r in rows["test"]:
        assert set(EXAMPLE_KEYS) <= set(r) and r["doc_id"].startswith("medquad/") and r["answer"]


def test_splits_are_deterministic_and_reused(workspace, tmp_path):
    from finetune.data import SplitArguments, prepare_splits

    args = SplitArguments(corpus=[str(workspace["corpus"])], storage_dir=str(workspace["storage"]), val_fraction=0.12, test_fraction=0.12)
    mtime = (workspace["splits"] / "test.jsonl").stat().st_mtime_ns
    _, again = prepare_splits(args, show_progress=False)
    assert again["content_hash"] == workspace["manifest"]["content_hash"]
    assert (workspace["splits"] / "test.jsonl").stat().st_mtime_ns == mtime, "up-to-date splits must be reused"
    fresh = SplitArguments(corpus=[str(workspace["corpus"])], storage_dir=str(tmp_path), val_fraction=0.12, test_fraction=0.12)
    assert prepare_splits(fresh, show_progress=False)[1]["content_hash"] == again["content_hash"]
    fresh.split_seed, fresh.force = 7, True
    assert prepare_splits(fresh, show_progress=False)[1]["content_hash"] != again["content_hash"]


def test_seed_format_rows_become_examples(tmp_path):
    from corpus.seed import load_seed_file
    from finetune.data import document_to_example, split_examples

    csv = tmp_path / "chat.csv"
    lines = ["Description,Patient,Doctor"]
    for i in range(20):
        lines.append(f'"Q. What about headache {i}?","Hi doctor, I have a headache {i} since days.","Hello, take rest {i}."')
    lines.append('"Q. No answer?","Hi",""')
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    examples = [document_to_example(d) for d in load_seed_file(csv)]
    assert len(examples) == 20 and examples[0]["question"].startswith("Hi doctor")
    assert examples[0]["answer"].startswith("Hello, take rest")
    splits, stats = split_examples(examples, 0.1, 0.1, seed=1)
    assert sum(stats["counts"].values()) == 20 and stats["counts"]["test"] == 2


def test_read_split_rejects_bad_files(tmp_path):
    from finetune.data import DataError, read_split

    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    (tmp_path / "bad.jsonl").write_text('{"question": "q", "answer": "a"}\n{not json\n', encoding="utf-8")
    (tmp_path / "noanswer.jsonl").write_text('{"question": "q", "answer": ""}\n', encoding="utf-8")
    with pytest.raises(DataError, match="is empty"):
        read_split(tmp_path / "empty.jsonl")
    with pytest.raises(DataError, match=r"bad.jsonl:2: malformed JSON"):
        read_split(tmp_path / "bad.jsonl")
    with pytest.raises(DataError, match=r"missing or empty field\(s\) \['answer'\]"):
        read_split(tmp_path / "noanswer.jsonl")
    with pytest.raises(DataError, match="does not exist"):
        read_split(tmp_path / "missing.jsonl")


def test_data_cli(workspace, tmp_path, capsys):
    from finetune.data import main

    assert main(["--corpus", str(workspace["corpus"]), "--storage_dir", str(tmp_path)]) == 0
    assert "train=" in capsys.readouterr().out
    assert (tmp_path / "splits" / "manifest.json").is_file()


# ---- encoding and packing ----------------------------------------------------------------------------------------


def test_chat_encoder_masks_the_prompt_and_truncates(workspace):
    from transformers import AutoTokenizer

    from finetune.train import ChatEncoder

    tokenizer = AutoTokenizer.from_pretrained(workspace["model"])
    encoder = ChatEncoder(tokenizer, max_length=96, min_answer_tokens=4)
    (short, long_), stats = encoder.encode_many(["What is glaucoma?"] * 2, ["An eye disease.", _answer(1, 300)])
    prompt_len = short["labels"].count(-100)
    assert tokenizer.decode(short["input_ids"][:prompt_len]) == encoder.prompt_text("What is glaucoma?")
    assert tokenizer.decode(short["input_ids"][prompt_len:]) == "An eye disease.<|im_end|>\n"
    assert short["labels"][prompt_len:] == short["input_ids"][prompt_len:]
    assert len(long_["input_ids"]) == 96 and long_["input_ids"][-2:] == encoder.suffix_ids
    assert stats == {"truncated": 1, "dropped_long_prompt": 0}


def test_padding_free_packing_has_no_cross_contamination(workspace):
    """Two sequences flattened into one row with restarting position_ids give the same logits as alone."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(workspace["model"], attn_implementation="sdpa").eval()
    a, b = torch.randint(3, 300, (1, 11)), torch.randint(3, 300, (1, 7))
    with torch.no_grad():
        alone = torch.cat([model(input_ids=a).logits, model(input_ids=b).logits], dim=1)
        packed = model(input_ids=torch.cat([a, b], 1), use_cache=False, position_ids=torch.cat([torch.arange(11), torch.arange(7)])[None]).logits
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-4)


# ---- training -------------------------------------------------------------------------------------------------------


def test_training_changes_lora_weights_and_logs_losses(trained):
    from safetensors.torch import load_file

    summary, out = trained["summary"], trained["out"]
    weights = load_file(out / "adapter_model.safetensors")
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b), "LoRA B starts at zero and must move"
    losses = [h["loss"] for h in summary["log_history"] if "loss" in h]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    assert math.isfinite(summary["eval_loss_before"]) and math.isfinite(summary["eval_loss_after"])
    assert summary["global_step"] == 4 and summary["precision"] == "fp32"
    assert summary["data"]["manifest_hash"] == trained["manifest"]["content_hash"]
    assert summary["data"]["train"]["truncated"] >= 1  # the 400-word answer
    assert json.loads((out / "medqa_run.json").read_text())["merged_dir"] == str(out / "merged")


def test_merged_model_equals_base_plus_adapter(trained):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rag_app.config import Settings
    from rag_app.llm.resolve import resolve_llm

    out, merged_dir = trained["out"], trained["out"] / "merged"
    ids = torch.randint(3, 300, (2, 16))
    base = AutoModelForCausalLM.from_pretrained(trained["model"], dtype=torch.float32)
    with torch.no_grad():
        expected = PeftModel.from_pretrained(base, out).eval()(input_ids=ids).logits
        merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
        got = merged(input_ids=ids).logits
        base_logits = AutoModelForCausalLM.from_pretrained(trained["model"]).eval()(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(got, base_logits, atol=1e-4), "the merge must change the model"
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert list(merged_dir.glob("*.safetensors")) and (merged_dir / "generation_config.json").is_file()
    assert AutoTokenizer.from_pretrained(merged_dir).chat_template
    card = (merged_dir / "README.md").read_text()
    assert trained["manifest"]["content_hash"] in card and "lora_r" in card and "Validation loss" in card
    resolved = resolve_llm(Settings(llm=str(merged_dir), storage_dir=trained["storage"], offline_fallback=False))
    assert resolved.path == merged_dir and not resolved.fallback


def test_merge_cli(trained, tmp_path, capsys):
    from finetune.merge import main

    target = tmp_path / "merged-again"
    assert main(["--adapter", str(trained["out"] / "checkpoint-2"), "--output", str(target), "--storage_dir", str(trained["storage"])]) == 0
    assert (target / "config.json").is_file() and "MEDQA_LLM=" in capsys.readouterr().out


def test_resume_continues_from_last_complete_checkpoint(workspace):
    from transformers import TrainerCallback

    from finetune.train import last_complete_checkpoint, run

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise RuntimeError("simulated crash")

    out = workspace["root"] / "resume"
    argv = tiny_argv(workspace, out, "--merge", "false", "--eval_before_train", "false", "--eval_strategy", "no")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(argv, callbacks=[Crash()])
    (out / "checkpoint-3").mkdir()  # a save interrupted half-way: no trainer_state.json
    (out / "checkpoint-3" / "adapter_config.json").write_text("{}")
    assert last_complete_checkpoint(out) == out / "checkpoint-2"
    before = (out / "checkpoint-2" / "adapter_model.safetensors").read_bytes()

    summary = run([*argv, "--resume"])
    assert summary["resumed_from"] == str(out / "checkpoint-2")
    assert summary["global_step"] == 4
    steps = [h["step"] for h in summary["log_history"] if "loss" in h]
    assert steps == [1, 2, 3, 4], steps  # steps 1-2 from the first run, 3-4 after resuming, none repeated
    assert (out / "checkpoint-2" / "adapter_model.safetensors").read_bytes() == before


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--no_such_option", "1"], "unknown argument"),
        (["--model_name_or_path", "/nonexistent/model-dir"], "base model not available"),
        (["--max_length", "20"], "max_length=20 is smaller than the prompt"),
        (["--learning_rate", "fast"], "invalid"),
    ],
)
def test_bad_input_gives_one_clear_line(workspace, tmp_path, capsys, extra, message):
    from finetune.train import main

    assert main(tiny_argv(workspace, tmp_path / "out", *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and message in err[-1], err
    assert not any("Traceback" in line for line in err)


def test_bad_recipe_and_data_give_one_clear_line(workspace, tmp_path, capsys):
    from finetune.train import main

    recipe = tmp_path / "bad.yaml"
    recipe.write_text(TINY_RECIPE.read_text() + "\nlora_rank: 8\n")
    assert main(["--config", str(recipe), "--output_dir", str(tmp_path / "o")]) == 2
    assert "unknown recipe key(s) ['lora_rank']" in capsys.readouterr().err

    empty = tmp_path / "empty.csv"
    empty.write_text("Description,Patient,Doctor\n")
    argv = tiny_argv(workspace, tmp_path / "o", "--corpus", str(empty), "--storage_dir", str(tmp_path / "s"))
    assert main(argv) == 2
    assert "no answered question/answer pairs" in capsys.readouterr().err

    malformed = tmp_path / "malformed.csv"
    malformed.write_text("question,answer\nq,a\n")
    assert main([*argv[:-4], "--corpus", str(malformed), "--storage_dir", str(tmp_path / "s2")]) == 2
    assert "missing column(s)" in capsys.readouterr().err


def test_cli_error_exit_code_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "finetune.train", "--config", str(TINY_RECIPE), "--bogus_flag", "1", "--output_dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown argument")


def _launch_with_timeout(cmd: list[str], env: dict[str, str], out: Path, timeout: float):
    """Run ``cmd``; on a timeout kill every process of the run (ranks outlive a dead launcher) and return None."""
    import psutil

    # Its own process group, so that a timeout stops both ranks and not only the launcher.
    with subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True) as launched:
        try:
            stdout, stderr = launched.communicate(timeout=timeout)
            return launched, stdout, stderr
        except subprocess.TimeoutExpired:
            os.killpg(launched.pid, signal.SIGKILL)
            for proc in psutil.process_iter(["cmdline"]):  # torchrun starts each rank in a session of its own
                if str(out) in " ".join(proc.info["cmdline"] or []):
                    proc.kill()
            stdout, stderr = launched.communicate()
            return None, stdout, stderr


def test_accelerate_launch_two_processes(workspace):
    out = workspace["root"] / "ddp"
    argv = tiny_argv(workspace, out, "--max_steps", "2", "--merge", "false", "--eval_before_train", "false", "--eval_strategy", "no")
    # accelerate 1.15 runs `launch --cpu --num_processes 2` as ONE process (its simple launcher); `--multi_gpu`
    # uses the torchrun launcher, which on a machine without visible GPUs starts 2 gloo CPU processes.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}

    def command() -> list[str]:
        with socket.socket() as sock:  # a free rendezvous port: a busy default one (29500) would stall the launch
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "finetune.train",
                *argv]  # fmt: skip

    cmd = command()
    launched, stdout, stderr = _launch_with_timeout(cmd, env, out, timeout=300)
    if launched is None:  # torchrun hung here once (one rank left behind its dead launcher): one more try
        cmd = command()
        launched, stdout, stderr = _launch_with_timeout(cmd, env, out, timeout=300)
        if launched is None:
            pytest.fail(f"two-process training did not finish in 300 s, twice:\n{stderr[-4000:]}")
    proc = subprocess.CompletedProcess(cmd, launched.returncode, stdout, stderr)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((out / "medqa_run.json").read_text())
    assert summary["world_size"] == 2 and summary["global_step"] == 2
    assert (out / "adapter_model.safetensors").is_file()
    assert proc.stdout.count("'loss'") + proc.stderr.count("'loss'") == 2, "only rank 0 logs, once per step"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="4-bit QLoRA needs a CUDA GPU")
def test_qlora_4bit_on_cuda(workspace):
    pytest.importorskip("bitsandbytes")
    from finetune.train import run

    out = workspace["root"] / "qlora"
    summary = run(tiny_argv(workspace, out, "--load_in_4bit", "true", "--use_cpu", "false", "--bf16", "true", "--dtype", "bfloat16"))
    assert summary["precision"] == "nf4" and summary["device"] == "cuda"
    assert (out / "merged" / "config.json").is_file()
    assert "quantization_config" not in json.loads((out / "merged" / "config.json").read_text())
