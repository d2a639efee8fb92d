import os
import subprocess

import pytest
import torch

from mnist_xai import stage


def test_a_running_stage_follows_the_number_of_stages_running(tmp_path, monkeypatch):
    """A stage that started alone took every core; when a second stage starts it gives half back within a
    check, and takes it back when the other ends (3 threads on 2 cores trained a ResNet 3x slower)."""
    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        pytest.skip("one core: nothing to share")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MNIST_XAI_THREADS_SHARED", raising=False)
    monkeypatch.setattr(stage, "_sharing", {})
    before = torch.get_num_threads()
    other = subprocess.Popen(["sleep", "60"])
    try:
        stage._share_cores()
        assert torch.get_num_threads() == cores  # alone
        (stage._running_folder() / f"{other.pid}-{stage.process_start(other.pid)}").touch()
        stage.follow_running_stages(every=0)
        assert torch.get_num_threads() == cores // 2
        other.kill()
        other.wait()
        stage.follow_running_stages(every=0)
        assert torch.get_num_threads() == cores // 2  # alone for a moment: perhaps between two stages
        stage.follow_running_stages(every=0, settle=0)
        assert torch.get_num_threads() == cores
    finally:
        other.kill()
        torch.set_num_threads(before)


def test_outside_a_stage_following_does_nothing(monkeypatch):
    monkeypatch.setattr(stage, "_sharing", {})
    before = torch.get_num_threads()
    stage.follow_running_stages(every=0)
    assert torch.get_num_threads() == before
