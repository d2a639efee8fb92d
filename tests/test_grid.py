"""The cell command's input checks and the grid's cells. The cell command itself runs for real in
tests/test_grid_ray.py: on a Ray cluster whose node dies mid-cell, then again to find every cell pushed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mnist_xai.grid import GridError, expand


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
