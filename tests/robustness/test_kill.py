"""SIGKILL, which no program can catch, never leaves a partial file, and the next run completes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from mnist_xai.files import atomic_write_bytes
from tests.helpers import ran_stages

WRITER = """
import sys
from mnist_xai.files import atomic_file

with atomic_file(sys.argv[1]) as handle:
    for _ in range(400):
        handle.write(b"x" * 1_000_000)  # 400 MB, slowly enough to be killed in the middle
    print("never", flush=True)
"""


def test_kill_during_an_atomic_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"the last good model")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target)])
    deadline = time.monotonic() + 30
    while not list(tmp_path.glob(".model.pt.*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # well inside the 400 MB write
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert target.read_bytes() == b"the last good model"
    orphans = list(tmp_path.glob(".model.pt.*.tmp"))
    assert len(orphans) == 1 and orphans[0].stat().st_size > 0  # the killed writer's partial file...
    atomic_write_bytes(target, b"a new model")
    assert target.read_bytes() == b"a new model"
    assert not list(tmp_path.glob(".model.pt.*.tmp"))  # ...cleared by the next write of the same file


def _kill_stage_when(repo, stage: str, script: str, marker: str) -> str:
    """Run `dvc repro -f -s stage`; SIGKILL the stage's own Python process once `marker` appears in its
    progress output. Returns what dvc printed."""
    dvc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "-f", "-s", stage], cwd=repo.path, env=repo.env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = bytearray()

    def read():
        for chunk in iter(lambda: dvc.stdout.read1(4096), b""):
            output.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    killed = False
    deadline = time.monotonic() + 120
    while dvc.poll() is None and time.monotonic() < deadline:
        if marker.encode() in output and not killed:
            for child in psutil.Process(dvc.pid).children(recursive=True):
                if script in " ".join(child.cmdline()):
                    os.kill(child.pid, signal.SIGKILL)
                    killed = True
        time.sleep(0.01)
    dvc.wait(timeout=60)
    reader.join(timeout=10)
    assert killed, f"the stage finished before it could be killed:\n{output.decode(errors='replace')[-2000:]}"
    assert dvc.returncode != 0
    return output.decode(errors="replace")


def _only_complete_outputs(folder: Path, expected: dict[str, bytes]) -> None:
    """Nothing in `folder` but outputs that are byte-identical to the last good ones (or absent); its subfolders are
    other stages' outputs."""
    for path in (p for p in folder.iterdir() if p.is_file()):
        assert path.name in expected, f"unexpected file after the kill: {path.name}"
        assert path.read_bytes() == expected[path.name], f"{path.name} changed"


def test_kill_during_train_then_repro_completes(pipeline):
    model = pipeline.path / "models/model.pt"
    good = {path.name: path.read_bytes() for path in (pipeline.path / "models").iterdir() if path.is_file()}
    _kill_stage_when(pipeline, "train", "stages/train.py", "train:")
    _only_complete_outputs(pipeline.path / "models", good)  # DVC removed model.pt before the run
    result = pipeline.dvc("repro")  # DVC re-runs train, or restores it from its run cache
    assert "train" in ran_stages(result.stdout) or "Stage 'train' is cached" in result.stdout
    assert model.read_bytes() == good["model.pt"]
    assert not list((pipeline.path / "models").glob(".*.tmp"))
    assert "Data and pipelines are up to date" in pipeline.dvc("repro").stdout
    # MLflow has no lease: the killed process's run would stay RUNNING forever; the next stage to track marks
    # it KILLED (if the run cache restored train, the report stage that follows runs and sweeps it)
    pipeline.stage("evaluate", check=True)
    runs = _runs(pipeline, "train")
    assert [r.info.status for r in runs if r.info.status == "RUNNING"] == []
    assert "KILLED" in [r.info.status for r in runs]


def _runs(repo, stage: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{repo.path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mnist-xai").experiment_id
    return client.search_runs([experiment], f"tags.dvc_stage = '{stage}'", order_by=["attributes.start_time DESC"])


def test_sigterm_is_one_line_keeps_the_outputs_and_marks_the_run_killed(pipeline):
    """SIGTERM (a CI cancel, `timeout`) printed nothing and left the MLflow run RUNNING forever; it is now
    handled like Ctrl-C."""
    before = (pipeline.path / "models/model.pt").read_bytes()
    stage = subprocess.Popen([sys.executable, "stages/train.py"], cwd=pipeline.path, env=pipeline.env,
                             stderr=subprocess.PIPE, text=True)
    seen = []
    for line in iter(stage.stderr.readline, ""):
        seen.append(line)
        if "train:" in line:
            stage.send_signal(signal.SIGTERM)
            break
    rest = stage.stderr.read()
    stage.wait(timeout=60)
    lines = [line for line in ("".join(seen) + rest).splitlines() if line.strip()]
    assert stage.returncode == 143, lines[-5:]
    assert lines[-1] == "error: terminated; outputs are unchanged (they are written atomically)"
    assert "Traceback" not in rest
    assert (pipeline.path / "models/model.pt").read_bytes() == before
    assert _runs(pipeline, "train")[0].info.status == "KILLED"


def test_kill_during_explain_then_repro_completes(pipeline):
    maps = pipeline.path / "explanations/smoothgrad.npz"
    good = {path.name: path.read_bytes() for path in (pipeline.path / "explanations").iterdir()}
    _kill_stage_when(pipeline, "explain@smoothgrad", "stages/explain.py smoothgrad", "smoothgrad:")
    _only_complete_outputs(pipeline.path / "explanations", good)
    result = pipeline.dvc("repro")
    assert "explain@smoothgrad" in ran_stages(result.stdout) or "'explain@smoothgrad' is cached" in result.stdout
    assert maps.read_bytes() == good["smoothgrad.npz"]
    assert "Data and pipelines are up to date" in pipeline.dvc("repro").stdout
    assert not list((pipeline.path / "explanations").glob(".*.tmp"))
