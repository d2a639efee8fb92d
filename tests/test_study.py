"""A real grid: two small cells (Fashion-MNIST x CNN at seeds 0 and 1, MNIST x ResNet) and one experiment that
fails, queued with `dvc exp run --queue` and run by `dvc queue start -j 2`, then `mnist-xai study` builds its page
from what DVC stored, checked in Chromium."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from tests.browser import Visit
from tests.conftest import quick_params
from tests.helpers import PipelineRepo

pytestmark = pytest.mark.xdist_group("grid")  # its own worker: it runs beside the session pipeline
METHODS = ["saliency", "gradcam", "guided_backprop"]
CONTROLS = ["random", "edge", "brightness", "oracle"]  # quick_params adds them: every pipeline needs them
CELLS = {"cell-fashion": ["base.dataset=fashion-mnist"], "cell-fashion-seed1": ["base.dataset=fashion-mnist",
                                                                                 "base.seed=1"],
         "cell-resnet": ["train.arch=resnet"]}


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> PipelineRepo:
    """A committed repository with no results yet: every cell runs its whole pipeline."""
    repo = PipelineRepo.create(tmp_path_factory.mktemp("grid"), quick_params(METHODS))
    repo.env.pop("OMP_NUM_THREADS", None)  # the stages share the cores themselves
    for name, settings in {**CELLS, "cell-broken": ["train.epochs=0"]}.items():
        repo.dvc("exp", "run", "--queue", "-n", name, *(arg for setting in settings for arg in ("-S", setting)))
    started = time.monotonic()
    repo.dvc("queue", "start", "-j", "2")
    status = ""
    while time.monotonic() - started < 900:
        status = repo.dvc("queue", "status").stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    repo.queue_status, repo.queue_seconds = status, time.monotonic() - started
    return repo


def study(repo: PipelineRepo, *args: str) -> subprocess.CompletedProcess:
    return repo.run(sys.executable, "-m", "mnist_xai.cli", "study", *args, check=False)


def test_the_queue_ran_two_at_a_time_into_the_one_store(grid):
    assert grid.queue_status.count("Success") == 3 and grid.queue_status.count("Failed") == 1, grid.queue_status
    logs = "".join(grid.dvc("queue", "logs", name, check=False).stdout for name in CELLS)
    assert "database is locked" not in logs and "Traceback" not in logs, logs[-3000:]
    client = MlflowClient(f"sqlite:///{grid.path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mnist-xai")
    runs = client.search_runs([experiment.experiment_id], "tags.dvc_stage = 'report'")
    tags = {run.data.tags["dvc_exp_name"]: (run.data.tags["dataset"], run.data.tags["arch"]) for run in runs}
    assert tags == {"cell-fashion": ("fashion-mnist", "cnn"), "cell-fashion-seed1": ("fashion-mnist", "cnn"),
                    "cell-resnet": ("mnist", "resnet")}
    assert not list((grid.path / ".dvc/tmp").rglob("mlflow.db")), "a run wrote to a store of its own"


def test_the_study_page_compares_the_cells_and_names_what_it_left_out(grid, browser):
    result = study(grid, "--root", str(grid.path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.match(r"wrote .*reports/study.html: 2 cells \(fashion-mnist × cnn \(seeds 0, 1\), mnist × resnet\); "
                    r"\d verdicts hold", result.stdout), result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and "experiment cell-broken failed" in warnings[0] and "left out" in warnings[0]
    page = grid.path / "reports/study.html"
    html = page.read_text()
    assert "Which verdicts hold across every cell" in html
    assert html.count('class="verdict') >= 2 * len(METHODS + CONTROLS)
    assert "cell-broken" in html and "tags.dvc_exp_name = 'cell-resnet'" in html
    # both seeds of the Fashion-MNIST cell, side by side, none dropped as a repeat
    assert "The verdict at each seed" in html and "seed 1" in html and "cell-fashion-seed1" in html
    assert "repeats" not in html
    from mnist_xai.data import DATASETS

    assert any(f"<span>{name}</span>" in html for name in DATASETS["fashion-mnist"].class_names[1:])  # not digits
    for width in (1280, 390):
        visit = Visit(browser, page.as_uri(), width)
        try:
            page_check = visit.images_and_layout()
            images, broken, overflow = page_check["count"], len(page_check["broken"]), page_check["overflow"]
            holds = visit.page.locator("#transfer-table tbody tr").count()
            visit.screenshot(f"study-{width}px.png")
        finally:
            visit.close()
        assert images >= 2 * len(METHODS + CONTROLS) * 4 and broken == 0
        assert overflow <= 0 and visit.console_errors == []
        assert visit.external_requests() == []
        assert holds == len(METHODS)  # every method but the controls


@pytest.mark.parametrize("args, message", [
    (["no-such-cell"], "no DVC experiment named no-such-cell in"),
    (["--root", "/"], "is not this pipeline's repository (no dvc.yaml): pass --root"),
])
def test_a_bad_study_request_is_one_line(grid, args, message):
    result = study(grid, *(args if "--root" in args else [*args, "--root", str(grid.path)]))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines


def test_each_stage_of_a_queued_pair_shared_the_cores(grid):
    """Two jobs at once: each stage registered itself and took cores // (stages running) threads (the grid's
    queue runs without the OMP_NUM_THREADS the test workers pin, so that the stages share by themselves)."""
    logs = "".join(grid.dvc("queue", "logs", name, check=False).stdout for name in CELLS)
    assert re.search(r"2 stages running at once: \d+ of \d+ cores' threads for this one", logs)



def test_the_study_reads_only_the_rows_it_shows(tmp_path):
    """Four example maps of a method cost their rows and the file's indices, not the whole explanation file."""
    import numpy as np

    from mnist_xai.files import atomic_write_npz
    from mnist_xai.study import read_rows

    rng = np.random.default_rng(0)
    maps = rng.standard_normal((1000, 28, 28)).astype(np.float32)
    path = tmp_path / "explanation.npz"
    atomic_write_npz(path, maps=maps, indices=np.arange(0, 3000, 3))

    class Counting:  # a real file, with the bytes read through it counted
        def __init__(self, handle):
            self.handle, self.read_bytes = handle, 0

        def read(self, size=-1):
            data = self.handle.read(size)
            self.read_bytes += len(data)
            return data

        def __getattr__(self, name):
            return getattr(self.handle, name)

    with open(path, "rb") as raw:
        counting = Counting(raw)
        shown = read_rows(counting, "maps", [3, 0, 7, 5])
    assert np.array_equal(shown, maps[[3, 0, 7, 5]])
    assert counting.read_bytes < path.stat().st_size / 20, (counting.read_bytes, path.stat().st_size)
    with open(path, "rb") as raw:
        assert np.array_equal(read_rows(raw, "indices"), np.arange(0, 3000, 3))


def test_a_tie_between_seeds_is_called_a_split_not_the_first_verdict():
    """Two seeds that disagree give no majority: the cell says "split", not whichever verdict came first."""
    from mnist_xai.study import SPLIT, Cell, Group, transfer

    def run(seed, verdicts):
        return Cell(experiment=f"e{seed}", rev="r", dataset="mnist", arch="cnn", seed=seed, accuracy=0.99,
                    quality={"methods": {m: {"verdict": v} for m, v in verdicts.items()}}, decoy={}, verdicts={})

    tied = Group("mnist", "cnn", [run(0, {"saliency": "trust", "gradcam": "trust"}),
                                  run(1, {"saliency": "do not trust", "gradcam": "trust"})])
    rows = {row["method"]: row for row in transfer([tied])}
    assert rows["saliency"]["cells"][0]["verdict"] == SPLIT and not rows["saliency"]["holds"]
    assert rows["gradcam"]["cells"][0] == {"verdict": "trust", "support": 2, "seeds": 2, "all": ["trust", "trust"]}
    majority = Group("mnist", "cnn", [*tied.runs, run(2, {"saliency": "trust", "gradcam": "trust"})])
    assert transfer([majority])[0]["cells"][0]["verdict"] == "trust"
    assert not rows["saliency"]["told"] and not rows["gradcam"]["told"]


def test_a_flipping_verdict_is_told_only_where_every_run_flagged_it():
    """The mission's bar on the study page: a method whose verdict moves between seeds counts as told when every
    run flagged it (metrics/quality.json's `flagged`), not when only some did; a verdict that holds needs no flag."""
    from mnist_xai.study import Cell, Group, transfer

    def run(seed, flagged):
        methods = {"saliency": {"verdict": ["trust", "too weak to call"][seed % 2], "flagged": flagged},
                   "gradcam": {"verdict": ["trust", "too weak to call"][seed % 2], "flagged": int(seed == 1)},
                   "occlusion": {"verdict": "trust", "flagged": 0}}
        return Cell(experiment=f"e{seed}", rev="r", dataset="mnist", arch="cnn", seed=seed, accuracy=0.99,
                    quality={"methods": methods}, decoy={}, verdicts={})

    rows = {row["method"]: row for row in transfer([Group("mnist", "cnn", [run(s, 1) for s in range(3)])])}
    assert rows["saliency"]["told"] and not rows["saliency"]["holds"]
    assert not rows["gradcam"]["told"]  # flagged only in the seed where it moved
    assert rows["occlusion"]["holds"] and not rows["occlusion"]["told"]

    # runs of code before the re-run agreement stored no `flagged`: read as `mnist-xai stability` reads them
    def old_run(seed, reported):
        methods = {"saliency": {"verdict": ["trust", "too weak to call"][seed % 2], "reported": reported}}
        return Cell(experiment=f"e{seed}", rev="r", dataset="mnist", arch="cnn", seed=seed, accuracy=0.99,
                    quality={"methods": methods}, decoy={}, verdicts={})

    assert transfer([Group("mnist", "cnn", [old_run(s, "trust (3/5)") for s in range(3)])])[0]["told"]
    assert not transfer([Group("mnist", "cnn", [old_run(s, "trust (5/5)") for s in range(3)])])[0]["told"]


def test_a_grid_with_a_failed_cell_still_writes_its_page_and_exits_non_zero(grid):
    """A scheduler or a script must see that a grid is incomplete: the failed cell is named in one line, with
    where to look, after the page of the others is written; a finished cell (found by its name: cell-fashion ran
    in the fixture) is not run again."""
    out = grid.path / "reports" / "grid-study.html"
    result = grid.run(sys.executable, "-m", "mnist_xai.cli", "grid", "--root", str(grid.path), "--out", str(out),
                      "-S", "base.dataset=fashion,no-such-dataset", check=False)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and errors == [
        "error: 1 of 2 cells failed: cell-no-such-dataset (see `dvc queue logs NAME`); the study page shows the "
        "others. Fix the cause and run the grid again: finished cells are skipped"], result.stderr[-2000:]
    assert "wrote " in result.stdout and "1 cells" in result.stdout, result.stdout
    html = out.read_text()
    assert "cell-no-such-dataset" in html and "fashion-mnist × cnn" in html
