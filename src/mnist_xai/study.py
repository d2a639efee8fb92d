"""A study across a grid of experiments (dataset x architecture x seed): does each method's verdict transfer?

Reads DVC experiments as DVC stores them: `dvc exp show --json` lists them with their params and metrics,
and DVC's file system reads what the page shows from the DVC cache. Nothing is re-run. The experiments of one
cell (dataset x architecture) that differ in `base.seed` are shown together, each method's verdict with how many
seeds reach it. Only what the page shows is read: each cell's example maps come from its first seed, and from
each explanation file only its indices and the rows of the example images. An experiment that lacks an output is
named in one line and left out. The page is self-contained and offline, like the report.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnist_xai.errors import UserError

log = logging.getLogger(__name__)

EXAMPLES = 4  # test images shown per cell, the same ones in every cell of a dataset
VERDICT_CLASS = {"trust": "trust", "use with care": "care", "too weak to call": "weak", "do not trust": "no",
                 "unstable": "weak"}


SPLIT = "split"
"""A cell's verdict where no verdict is reached by more seeds than every other."""


class StudyError(UserError):
    """The experiments cannot be studied (none found, none complete, a name that does not exist)."""


@dataclass
class Cell:
    """One experiment: a cell of the grid at one seed."""

    experiment: str
    rev: str
    dataset: str
    arch: str
    seed: int
    accuracy: float
    quality: dict  # metrics/quality.json
    decoy: dict  # metrics/decoy.json
    verdicts: dict  # quality/verdicts.json
    maps: dict[str, np.ndarray] = field(default_factory=dict)  # method -> maps of the example images
    images: np.ndarray | None = None  # the example test images, uint8
    labels: np.ndarray | None = None  # their true classes
    indices: list[int] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)  # MLflow runs of this experiment
    gallery: dict = field(default_factory=dict)  # the example images and maps, as the page draws them

    def __post_init__(self) -> None:
        # runs of code before the re-run agreement stored no `flagged`: read it as the stability study does
        from mnist_xai.stability import flagged

        for row in self.quality.get("methods", {}).values():
            row.setdefault("flagged", flagged(row))

    @property
    def label(self) -> str:
        return f"{self.dataset} × {self.arch}"

    @property
    def methods(self) -> dict[str, dict]:
        return self.quality["methods"]


@dataclass
class Group:
    """A cell of the grid (dataset x architecture) with its experiments, one per seed, lowest seed first."""

    dataset: str
    arch: str
    runs: list[Cell]

    @property
    def label(self) -> str:
        return f"{self.dataset} × {self.arch}"

    @property
    def shown(self) -> Cell:
        """The run whose scores and example maps the page shows."""
        return self.runs[0]

    @property
    def seeds(self) -> list[int]:
        return [run.seed for run in self.runs]

    def verdicts(self, method: str) -> list[str]:
        return [run.methods[method]["verdict"] for run in self.runs if method in run.methods]


def group_by_cell(cells: list[Cell], left_out: list[str]) -> list[Group]:
    """The experiments grouped by dataset x architecture, seeds together. Two experiments of the same cell and
    seed repeat each other: the newest (`dvc exp show` lists it first) is kept, and the other named in left_out."""
    kept: dict[tuple[str, str, int], Cell] = {}
    for cell in cells:
        key = (cell.dataset, cell.arch, cell.seed)
        if key in kept:
            left_out.append(f"experiment {cell.experiment} repeats {cell.label} at seed {cell.seed} of "
                            f"{kept[key].experiment}")
            log.warning("%s: left out of the study", left_out[-1])
        else:
            kept[key] = cell
    groups: dict[tuple[str, str], list[Cell]] = {}
    for (dataset, arch, _), cell in sorted(kept.items()):
        groups.setdefault((dataset, arch), []).append(cell)
    return [Group(dataset, arch, runs) for (dataset, arch), runs in groups.items()]


def list_experiments(root: Path) -> list[dict]:
    """Every experiment `dvc exp show --json` knows: {"name", "rev", "params", "metrics"} (metrics: file -> data)."""
    result = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=root, capture_output=True,
                            text=True)
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise StudyError(f"`dvc exp show` failed in {root}: {detail}")
    found = []
    for baseline in json.loads(result.stdout):
        for experiment in baseline.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                data = rev.get("data") or {}
                found.append({"name": rev.get("name") or experiment.get("name") or rev["rev"][:7], "rev": rev["rev"],
                              "error": rev.get("error"),
                              "params": ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {},
                              "metrics": {path: (entry or {}).get("data") for path, entry in
                                          (data.get("metrics") or {}).items()}})
    return found


def load_cell(root: Path, experiment: dict) -> Cell:
    """One experiment's results, read through DVC; StudyError names what is missing."""
    name, params, metrics = experiment["name"], experiment["params"], experiment["metrics"]
    if experiment.get("error"):
        error = experiment["error"]
        raise StudyError(f"experiment {name} failed ({error.get('msg', error) if isinstance(error, dict) else error})")
    missing = [path for path in ("metrics/evaluate.json", "metrics/quality.json", "metrics/decoy.json")
               if not metrics.get(path)]
    if missing:
        raise StudyError(f"experiment {name} lacks {', '.join(missing)}")
    from dvc.api import DVCFileSystem

    fs = DVCFileSystem(str(root), rev=experiment["rev"])
    try:
        verdicts = json.loads(fs.read_text("quality/verdicts.json"))
    except Exception as error:  # noqa: BLE001 - DVC raises many kinds; all mean the file is not there
        raise StudyError(f"experiment {name} lacks quality/verdicts.json ({type(error).__name__})") from None
    return Cell(experiment=name, rev=experiment["rev"], dataset=params.get("base", {}).get("dataset", "mnist"),
                arch=params.get("train", {}).get("arch", "cnn"), seed=int(params.get("base", {}).get("seed", 0)),
                accuracy=metrics["metrics/evaluate.json"]["accuracy"],
                quality=metrics["metrics/quality.json"], decoy=metrics["metrics/decoy.json"], verdicts=verdicts)


def load_examples(root: Path, groups: list[Group]) -> None:
    """For each dataset, the first EXAMPLES test images that the shown run of every cell explained; each shown
    run's maps of them, and the images themselves, read through DVC. Of each explanation file only its indices and
    the rows of those images are read (see read_rows), not the whole file."""
    from dvc.api import DVCFileSystem

    from mnist_xai.data import parse_idx

    by_dataset: dict[str, list[Cell]] = {}
    for group in groups:
        by_dataset.setdefault(group.dataset, []).append(group.shown)
    for dataset, shown in by_dataset.items():
        systems = {cell.experiment: DVCFileSystem(str(root), rev=cell.rev) for cell in shown}
        indices = {}
        for cell in shown:
            for method in cell.methods:
                with systems[cell.experiment].open(f"explanations/{method}.npz", "rb") as handle:
                    indices[cell.experiment, method] = read_rows(handle, "indices")
        common = set.intersection(*(set(found.tolist()) for found in indices.values())) if indices else set()
        chosen = sorted(common)[:EXAMPLES]
        fs = systems[shown[0].experiment]  # the same test split in every cell of a dataset: read it once
        with fs.open(f"data/{dataset}/t10k-images-idx3-ubyte", "rb") as handle:
            images = parse_idx(handle.read(), "t10k-images-idx3-ubyte")[chosen]
        with fs.open(f"data/{dataset}/t10k-labels-idx1-ubyte", "rb") as handle:
            labels = parse_idx(handle.read(), "t10k-labels-idx1-ubyte")[chosen]
        for cell in shown:
            cell.indices, cell.images, cell.labels = chosen, images, labels
            for method in cell.methods:
                position = {index: row for row, index in enumerate(indices[cell.experiment, method].tolist())}
                with systems[cell.experiment].open(f"explanations/{method}.npz", "rb") as handle:
                    cell.maps[method] = read_rows(handle, "maps", [position[i] for i in chosen])


def read_rows(handle, name: str, rows: list[int] | None = None) -> np.ndarray:
    """Array `name` of an .npz file (a seekable binary file object), or only its `rows` along the first axis: the
    member is decompressed as a stream up to the last row wanted and no further, so showing four images of a
    method costs what their rows cost, not the whole file (1,000 maps per method by default)."""
    import zipfile

    from numpy.lib import format as npy

    with zipfile.ZipFile(handle) as archive, archive.open(f"{name}.npy") as member:
        if rows is None:
            return npy.read_array(member)
        version = npy.read_magic(member)
        header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, fortran_order, dtype = header(member)
        if fortran_order or dtype.hasobject:
            raise ValueError(f"{name}.npy is not a C-ordered numeric array")
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        found, position = {}, 0
        for row in sorted(set(rows)):
            skip = (row - position) * row_bytes
            while skip > 0:  # read and drop: a deflated stream cannot seek
                skip -= len(member.read(min(skip, 1 << 20)))
            found[row] = np.frombuffer(member.read(row_bytes), dtype=dtype).reshape(shape[1:])
            position = row + 1
        return np.stack([found[row] for row in rows]) if rows else np.empty((0, *shape[1:]), dtype=dtype)


def find_runs(cells: list[Cell], experiment_name: str) -> str | None:
    """Each cell's MLflow runs (tagged with the DVC experiment's name), newest first; the tracking URI."""
    from mnist_xai import tracking

    try:
        from mlflow.tracking import MlflowClient

        uri = tracking.tracking_uri()
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:
            return None
        for cell in cells:
            runs = client.search_runs([experiment.experiment_id], f"tags.dvc_exp_name = '{cell.experiment}'",
                                      order_by=["attributes.start_time DESC"])
            seen = set()
            for run in runs:
                stage = run.data.tags.get("dvc_stage", "")
                if stage in seen:
                    continue
                seen.add(stage)
                link = (f"{uri.rstrip('/')}/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}"
                        if uri.startswith(("http://", "https://")) else None)
                cell.runs.append({"stage": stage, "run_id": run.info.run_id, "status": run.info.status,
                                  "link": link})
        return tracking.display_uri()
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - the study stands without its MLflow links
        log.warning("could not read the MLflow runs (%s): the study page shows no run links", error)
        return None


def transfer(groups: list[Group]) -> list[dict]:
    """Per method: in every cell, its verdict at each seed and the one most seeds reach (with how many), or
    "split" where two verdicts tie for the most (a 1-1 split of two seeds names neither); it holds when every
    seed of every cell reaches the same verdict, and flips otherwise ("told" when every run flagged it)."""
    from collections import Counter

    from mnist_xai.attribution.registry import CONTROLS

    runs = [run for group in groups for run in group.runs]
    methods = [m for m in groups[0].shown.methods if m not in CONTROLS and all(m in run.methods for run in runs)]
    rows = []
    for method in methods:
        cells = []
        for group in groups:
            verdicts = group.verdicts(method)
            counts = Counter(verdicts).most_common()
            modal, support = counts[0]
            if len(counts) > 1 and counts[1][1] == support:
                modal = SPLIT
            cells.append({"verdict": modal, "support": support, "seeds": len(verdicts), "all": verdicts})
        everything = [verdict for cell in cells for verdict in cell["all"]]
        # the mission's bar: where the verdict moves, every run told its reader it might (Verdict.flagged)
        flagged = all(run.methods[method].get("flagged") for run in runs)
        rows.append({"method": method, "cells": cells, "verdicts": [cell["verdict"] for cell in cells],
                     "holds": len(set(everything)) == 1, "told": len(set(everything)) > 1 and flagged})
    return rows


def build_page(groups: list[Group], rows: list[dict], left_out: list[str], tracking_uri: str | None,
               root: Path) -> str:
    from mnist_xai.attribution import is_signed
    from mnist_xai.data import get_dataset
    from mnist_xai.quality.metrics import BY_KEY, KEY_SCORES
    from mnist_xai.report import figures
    from mnist_xai.report.builder import render_template

    for cell in (group.shown for group in groups):
        names = get_dataset(cell.dataset).class_names
        cell.gallery = {
            "samples": [{"src": figures.data_uri(figures.digit_png(image)), "label": names[int(label)],
                         "alt": f"{cell.label}: test image #{index}, a {names[int(label)]}"}
                        for image, index, label in zip(cell.images, cell.indices, cell.labels, strict=True)],
            "rows": [{"method": method, "cells": [
                {"src": figures.data_uri(figures.png_bytes(figures.overlay_rgb(image, attribution,
                                                                               figures.scale_limit(maps),
                                                                               is_signed(method)))),
                 "alt": f"{method} map of test image #{index} ({cell.label})"}
                for image, attribution, index in zip(cell.images, maps, cell.indices, strict=True)]}
                for method, maps in cell.maps.items()]}
    return render_template(Path(__file__).parent / "study.html.j2", dict(
        groups=groups, rows=rows, left_out=left_out, tracking_uri=tracking_uri, scores=KEY_SCORES,
        labels={key: BY_KEY[key] for key in KEY_SCORES}, verdict_class=VERDICT_CLASS,
        holding=[row for row in rows if row["holds"]], flipping=[row for row in rows if not row["holds"]],
        root=str(root)))


def study(root: Path, names: list[str], out: Path, experiment_name: str = "mnist-xai",
          allow_missing: bool = False, experiments: list[dict] | None = None) -> dict[str, Any]:
    """Build the study page from `names` (default: every experiment); returns what it contains. With
    `allow_missing`, a name with no experiment (a cell of a grid that failed) is named as left out. `experiments`:
    what list_experiments(root) gave, when the caller has it already (`dvc exp show` takes seconds)."""
    experiments = list_experiments(root) if experiments is None else experiments
    missing_names = []
    if names:
        unknown = sorted(set(names) - {e["name"] for e in experiments})
        if unknown and allow_missing:
            missing_names = [f"experiment {name} is not here (its cell failed?)" for name in unknown]
        elif unknown:
            raise StudyError(f"no DVC experiment named {', '.join(unknown)} in {root} (see `dvc exp show`)")
        experiments = [e for e in experiments if e["name"] in names]
    if not experiments:
        raise StudyError(f"no DVC experiments in {root}: queue a grid first, e.g. dvc exp run --queue -S "
                         "base.dataset=mnist,fashion-mnist -S train.arch=cnn,resnet; dvc queue start -j 2")
    cells, left_out = [], list(missing_names)
    for experiment in experiments:
        try:
            cells.append(load_cell(root, experiment))
        except StudyError as error:
            log.warning("%s: left out of the study", error)
            left_out.append(str(error))
    groups = group_by_cell(cells, left_out)
    if not groups:
        raise StudyError("no experiment has the outputs a study needs (metrics/quality.json and the "
                         "explanations): run them to the end first")
    load_examples(root, groups)
    uri = find_runs([run for group in groups for run in group.runs], experiment_name)
    rows = transfer(groups)
    page = build_page(groups, rows, left_out, uri, root)
    from mnist_xai.files import atomic_write_text

    atomic_write_text(out, page)
    return {"cells": [g.label for g in groups], "seeds": {g.label: g.seeds for g in groups}, "left_out": left_out,
            "transfer": rows}
