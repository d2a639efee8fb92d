"""The cell command's input checks and the grid's cells. The cell command itself runs for real in
tests/test_grid_ray.py: on a Ray cluster whose node dies mid-cell, then again to find every cell pushed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mnist_xai.grid import GridError, cell_invocation, expand, longest_first
from mnist_xai.params import read_yaml
from tests.conftest import ROOT


def test_a_cell_with_a_bad_name_or_setting_is_one_line(tmp_path):
    for args, message in ((["--name", "bad name"], "error: --name 'bad name': use letters"),
                          (["--name", "ok", "-S", "base.seed"], "error: -S 'base.seed': give key=value")):
        result = subprocess.run([sys.executable, "-m", "mnist_xai.cli", "cell", "--repo", str(tmp_path), "--rev",
                                 "HEAD", *args], capture_output=True, text=True)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith(message), result.stderr


def test_a_grid_expands_into_one_named_cell_per_combination():
    cells = expand(["base.dataset=mnist,fashion-mnist", "train.arch=cnn,resnet", "train.epochs=2"])
    assert cells == {
        "cell-mnist-cnn": ["base.dataset=mnist", "train.arch=cnn", "train.epochs=2"],
        "cell-mnist-resnet": ["base.dataset=mnist", "train.arch=resnet", "train.epochs=2"],
        "cell-fashion-mnist-cnn": ["base.dataset=fashion-mnist", "train.arch=cnn", "train.epochs=2"],
        "cell-fashion-mnist-resnet": ["base.dataset=fashion-mnist", "train.arch=resnet", "train.epochs=2"]}
    with pytest.raises(GridError, match="give key=value"):
        expand(["base.seed"])


def test_the_longest_cells_start_first():
    """Started in the grid's order, two slots run the CNN cells first and end with a ResNet cell alone, one slot
    idle for most of its run; longest first, the two ResNet cells run side by side."""
    params = read_yaml(ROOT / "params.yaml")
    cells = expand(["base.dataset=mnist,fashion-mnist", "train.arch=cnn,resnet"])
    assert longest_first(cells, params) == ["cell-mnist-resnet", "cell-fashion-mnist-resnet", "cell-mnist-cnn",
                                            "cell-fashion-mnist-cnn"]
    seeds = expand(["base.seed=0,1,2"])
    assert longest_first(seeds, params) == list(seeds)  # equals keep the grid's order
    assert longest_first(expand(["train.epochs=1,5", "quality.replicates=3,5"]), params) == [
        "cell-5-5", "cell-1-5", "cell-5-3", "cell-1-3"]  # replicates before epochs
    # a value the cell does not set comes from params.yaml: there every training image (0) is more than 6000
    mixed = {"few": ["train.n_images=6000"], "all": ["base.seed=1"], "odd": ["train.epochs=many"]}
    assert longest_first(mixed, params) == ["all", "few", "odd"]
    assert longest_first(cells, {**params, "train": {**params["train"], "arch": "resnet"}})[:2] == [
        "cell-mnist-resnet", "cell-fashion-mnist-resnet"]
    # the list another scheduler's array job runs, in index order
    listed = subprocess.run([sys.executable, "-m", "mnist_xai.cli", "grid", "--root", str(ROOT), "--list",
                             "-S", "base.dataset=mnist,fashion-mnist", "-S", "train.arch=cnn,resnet"],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    assert listed == [f"{name} " + " ".join(f"-S {setting}" for setting in cells[name])
                      for name in longest_first(cells, params)]


def test_a_ray_cell_shares_its_nodes_cores_unless_its_threads_are_fixed():
    """Ray sets OMP_NUM_THREADS to a task's CPUs, which would fix a cell's threads at one: the last cell of a
    grid would leave the node's other cores idle. Shared, the variable is dropped and the stages share the node's
    cores as the local queue's do; fixed, the cell command sets them."""
    ray_worker = {"OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": "http://tracking:5000"}
    command, env = cell_invocation("git@host:team/repo.git", "abc123", "cell-1", ["base.seed=1"], None, ray_worker)
    assert "--cpus" not in command and "OMP_NUM_THREADS" not in env and env["MLFLOW_TRACKING_URI"]
    assert command[-2:] == ["-S", "base.seed=1"] and "--die-with-parent" in command
    command, env = cell_invocation("git@host:team/repo.git", "abc123", "cell-1", [], 2, ray_worker)
    assert command[command.index("--cpus") + 1] == "2" and env == ray_worker
