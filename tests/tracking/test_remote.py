"""Sharing data and models through a DVC remote: push, a fresh clone, pull, nothing left to run."""

import json
import subprocess


def test_push_clone_pull_leaves_nothing_to_run(pipeline, tmp_path):
    remote = tmp_path / "remote"
    pipeline.dvc("remote", "add", "-d", "team", str(remote))
    pipeline.git("add", "dvc.lock", ".dvc/config")
    pipeline.git("commit", "-q", "-m", "pipeline results and the team remote")
    pipeline.dvc("push")
    assert any(remote.rglob("*")), "nothing was pushed"

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(pipeline.path), str(clone)], check=True)
    from tests.helpers import PipelineRepo

    fresh = PipelineRepo(path=clone, env=pipeline.env)
    assert not (clone / "models/model.pt").exists()
    fresh.dvc("pull")
    assert (clone / "models/model.pt").read_bytes() == (pipeline.path / "models/model.pt").read_bytes()
    status = json.loads(fresh.dvc("status", "--json").stdout)
    assert status == {}, status
    dry = fresh.dvc("repro", "--dry")
    assert "Running stage" not in dry.stdout
