"""A study across a grid of experiments (dataset x architecture): does each method's verdict transfer?

Reads DVC experiments as DVC stores them: `dvc exp show --json` lists them with their params and metrics,
and DVC's file system reads each one's explanations and test images from the DVC cache. Nothing is re-run.
An experiment that lacks an output is named in one line and left out. The page is self-contained and offline,
like the report.
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


class StudyError(UserError):
    """The experiments cannot be studied (none found, none complete, a name that does not exist)."""


@dataclass
class Cell:
    experiment: str
    rev: str
    dataset: str
    arch: str
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

    @property
    def label(self) -> str:
        return f"{self.dataset} × {self.arch}"

    @property
    def methods(self) -> dict[str, dict]:
        return self.quality["methods"]


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
                arch=params.get("train", {}).get("arch", "cnn"), accuracy=metrics["metrics/evaluate.json"]["accuracy"],
                quality=metrics["metrics/quality.json"], decoy=metrics["metrics/decoy.json"], verdicts=verdicts)


def load_examples(root: Path, cells: list[Cell]) -> None:
    """For each dataset, the first EXAMPLES test images that every cell of it explained; each cell's maps of
    them, and the images themselves, read through DVC."""
    from dvc.api import DVCFileSystem

    from mnist_xai.data import parse_idx

    by_dataset: dict[str, list[Cell]] = {}
    for cell in cells:
        by_dataset.setdefault(cell.dataset, []).append(cell)
    for dataset, group in by_dataset.items():
        explained = {}
        for cell in group:
            fs = DVCFileSystem(str(root), rev=cell.rev)
            arrays = {}
            for method in cell.methods:
                with fs.open(f"explanations/{method}.npz", "rb") as handle, np.load(handle) as archive:
                    arrays[method] = (archive["indices"], archive["maps"])
            explained[cell.experiment] = (fs, arrays)
        common = None
        for _, arrays in explained.values():
            for indices, _ in arrays.values():
                common = set(indices.tolist()) if common is None else common & set(indices.tolist())
        chosen = sorted(common or [])[:EXAMPLES]
        fs = explained[group[0].experiment][0]  # the same test split in every cell of a dataset: read it once
        with fs.open(f"data/{dataset}/t10k-images-idx3-ubyte", "rb") as handle:
            images = parse_idx(handle.read(), "t10k-images-idx3-ubyte")[chosen]
        with fs.open(f"data/{dataset}/t10k-labels-idx1-ubyte", "rb") as handle:
            labels = parse_idx(handle.read(), "t10k-labels-idx1-ubyte")[chosen]
        for cell in group:
            cell.indices, cell.images, cell.labels = chosen, images, labels
            for method, (indices, maps) in explained[cell.experiment][1].items():
                rows = {index: row for row, index in enumerate(indices.tolist())}
                cell.maps[method] = maps[[rows[i] for i in chosen]]


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


def transfer(cells: list[Cell]) -> list[dict]:
    """Per method: its verdict in every cell, and whether it holds (the same everywhere) or flips."""
    from mnist_xai.attribution.registry import CONTROLS

    methods = [m for m in cells[0].methods if m not in CONTROLS and all(m in c.methods for c in cells)]
    rows = []
    for method in methods:
        verdicts = [cell.methods[method]["verdict"] for cell in cells]
        rows.append({"method": method, "verdicts": verdicts, "holds": len(set(verdicts)) == 1})
    return rows


def build_page(cells: list[Cell], rows: list[dict], left_out: list[str], tracking_uri: str | None,
               root: Path) -> str:
    from mnist_xai.attribution import is_signed
    from mnist_xai.data import get_dataset
    from mnist_xai.quality.metrics import BY_KEY, KEY_SCORES
    from mnist_xai.report import figures
    from mnist_xai.report.builder import render_template

    for cell in cells:
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
        cells=cells, rows=rows, left_out=left_out, tracking_uri=tracking_uri, scores=KEY_SCORES,
        labels={key: BY_KEY[key] for key in KEY_SCORES}, verdict_class=VERDICT_CLASS,
        holding=[row for row in rows if row["holds"]], flipping=[row for row in rows if not row["holds"]],
        root=str(root)))


def study(root: Path, names: list[str], out: Path, experiment_name: str = "mnist-xai") -> dict[str, Any]:
    """Build the study page from `names` (default: every experiment); returns what it contains."""
    experiments = list_experiments(root)
    if names:
        unknown = sorted(set(names) - {e["name"] for e in experiments})
        if unknown:
            raise StudyError(f"no DVC experiment named {', '.join(unknown)} in {root} (see `dvc exp show`)")
        experiments = [e for e in experiments if e["name"] in names]
    if not experiments:
        raise StudyError(f"no DVC experiments in {root}: queue a grid first, e.g. dvc exp run --queue -S "
                         "base.dataset=mnist,fashion-mnist -S train.arch=cnn,resnet; dvc queue start -j 2")
    cells, left_out = [], []
    for experiment in experiments:
        try:
            cells.append(load_cell(root, experiment))
        except StudyError as error:
            log.warning("%s: left out of the study", error)
            left_out.append(str(error))
    newest: dict[str, Cell] = {}
    for cell in cells:  # dvc exp show lists the newest first: keep that one per (dataset, architecture)
        if cell.label in newest:
            left_out.append(f"experiment {cell.experiment} repeats the cell {cell.label} of "
                            f"{newest[cell.label].experiment}")
            log.warning("%s: left out of the study", left_out[-1])
        else:
            newest[cell.label] = cell
    cells = sorted(newest.values(), key=lambda c: (c.dataset, c.arch))
    if not cells:
        raise StudyError("no experiment has the outputs a study needs (metrics/quality.json and the "
                         "explanations): run them to the end first")
    load_examples(root, cells)
    uri = find_runs(cells, experiment_name)
    rows = transfer(cells)
    page = build_page(cells, rows, left_out, uri, root)
    from mnist_xai.files import atomic_write_text

    atomic_write_text(out, page)
    return {"cells": [c.label for c in cells], "left_out": left_out, "transfer": rows}
