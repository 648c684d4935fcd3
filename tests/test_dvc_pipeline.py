"""`dvc repro` runs every stage on the tiny recipe in a temp copy of the repo; a second run does nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.test_liveqa import XML as LIVEQA_XML

REPO = Path(__file__).resolve().parents[1]
DVC = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")

pytestmark = pytest.mark.skipif(not Path(DVC).exists(), reason="dvc not installed (pip install -e '.[pipeline]')")


def _copy_repo(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for rel in files:
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


@pytest.mark.slow
def test_dvc_repro_tiny_pipeline(tmp_path: Path, medquad_dir: Path, tiny_model_dir: Path) -> None:
    repo = tmp_path / "repo"
    _copy_repo(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["corpus"] = str(medquad_dir)
    params["prepare"].update(val_fraction=0.25, test_fraction=0.25)
    params["train"].update(recipe="finetune/recipes/tiny.yaml", base_model=str(tiny_model_dir))
    tiny = yaml.safe_load((repo / "finetune" / "recipes" / "tiny.yaml").read_text())
    (repo / "finetune" / "recipes" / "tiny-raft.yaml").write_text(yaml.safe_dump({**tiny, "max_length": 768, "raft_top_k": 2}))
    params["raft"].update(recipe="finetune/recipes/tiny-raft.yaml", base_model=str(tiny_model_dir))
    params["eval"].update(limit=3, max_new_tokens=8)
    params["eval_liveqa"].update(half="all", limit=2)
    liveqa = tmp_path / "liveqa"
    liveqa.mkdir()
    (liveqa / "TREC-2017-LiveQA-Medical-Train-2.xml").write_text(LIVEQA_XML, encoding="utf-8")
    params["liveqa"] = str(liveqa)
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run = lambda *cmd: subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=1200)  # noqa: E731
    assert run("git", "init", "-q").returncode == 0
    assert (repo / ".dvc" / "config").is_file()  # a DVC repository as cloned: no `dvc init` needed
    dry = run(DVC, "repro", "--dry", "--force")
    assert dry.returncode == 0 and "Running stage 'ship'" in dry.stdout, dry.stderr[-2000:]

    first = run(DVC, "repro")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for path in (
        "storage/splits/test.jsonl",
        "storage/splits/manifest.json",
        "runs/smollm2-135m-lora/train/adapter_config.json",
        "runs/smollm2-135m-lora/merged/config.json",
        "storage/chroma",
        "storage/docstore",
        "storage/reports/dvc/report.md",
        "storage/reports/dvc/metrics.json",
        "storage/reports/dvc/rouge.png",
        "runs/smollm2-135m-raft/merged/config.json",
        "storage/reports/dvc-liveqa/metrics.json",
        "finetune/adapters/smollm2-135m-raft/adapter_model.safetensors",
        "finetune/adapters/smollm2-135m-raft/medqa_run.json",
    ):
        assert (repo / path).exists(), path

    second = run(DVC, "repro")
    assert second.returncode == 0
    assert "Running stage" not in second.stdout and "up to date" in second.stdout
    shown = run(DVC, "metrics", "show")
    assert shown.returncode == 0 and "ft+rag/rougeL" in shown.stdout and "raft+rag/rougeL" in shown.stdout

    # An experiment with one parameter changed re-runs only the stages that depend on it (experiments
    # need a commit to branch from, as in any clone of the project).
    assert run("git", "add", "-A").returncode == 0
    assert run("git", "-c", "user.name=medqa", "-c", "user.email=medqa@localhost", "commit", "-qm", "pipeline").returncode == 0
    exp = run(DVC, "exp", "run", "-S", "eval.limit=2")
    assert exp.returncode == 0, exp.stdout[-2000:] + exp.stderr[-2000:]
    assert "Running stage 'eval'" in exp.stdout and "Running stage 'train'" not in exp.stdout
