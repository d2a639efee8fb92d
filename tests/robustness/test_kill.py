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

from mnist_xai.io import atomic_write_bytes
from tests.helpers import ran_stages

WRITER = """
import sys
from mnist_xai.io import atomic_write_with

def slow(handle):
    for _ in range(400):
        handle.write(b"x" * 1_000_000)  # 400 MB, slowly enough to be killed in the middle
    print("never", flush=True)

atomic_write_with(sys.argv[1], slow)
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
    """Nothing in `folder` but outputs that are byte-identical to the last good ones (or absent)."""
    for path in folder.iterdir():
        assert path.name in expected, f"unexpected file after the kill: {path.name}"
        assert path.read_bytes() == expected[path.name], f"{path.name} changed"


def test_kill_during_train_then_repro_completes(pipeline):
    model = pipeline.path / "models/model.pt"
    good = {path.name: path.read_bytes() for path in (pipeline.path / "models").iterdir()}
    _kill_stage_when(pipeline, "train", "stages/train.py", "train:")
    _only_complete_outputs(pipeline.path / "models", good)  # DVC removed model.pt before the run
    result = pipeline.dvc("repro")  # DVC re-runs train, or restores it from its run cache
    assert "train" in ran_stages(result.stdout) or "Stage 'train' is cached" in result.stdout
    assert model.read_bytes() == good["model.pt"]
    assert not list((pipeline.path / "models").glob(".*.tmp"))
    assert "Data and pipelines are up to date" in pipeline.dvc("repro").stdout


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
