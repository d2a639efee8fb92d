"""notebooks/walkthrough.ipynb: stored without outputs, and run top to bottom on a real Jupyter kernel
(nbclient + ipykernel) against what `dvc repro` made."""

from __future__ import annotations

import nbformat
from nbclient import NotebookClient

from tests.conftest import ROOT

NOTEBOOK = ROOT / "notebooks" / "walkthrough.ipynb"


def read_notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def test_stored_valid_and_without_outputs():
    notebook = read_notebook()
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code), \
        "clear the outputs before committing: jupyter nbconvert --clear-output --inplace notebooks/walkthrough.ipynb"


def test_reads_in_order_train_explain_compare_with_only_the_public_api():
    notebook = read_notebook()
    headings = [line for cell in notebook.cells if cell.cell_type == "markdown"
                for line in cell.source.splitlines() if line.startswith("## ")]
    assert headings == ["## 1. Train", "## 2. Explain", "## 3. Compare: which explanation to trust"]
    source = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    imports = sorted(line.strip() for line in source.splitlines() if line.startswith("from mnist_xai"))
    assert imports == ["from mnist_xai.attribution import METHODS, attribute",
                       "from mnist_xai.data import background_images, load_split, normalize",
                       "from mnist_xai.model import load_model",
                       "from mnist_xai.user_image import load_and_prepare"]
    assert "train(" not in source  # it reads what dvc repro trained


def test_runs_top_to_bottom_on_the_pipeline_outputs(pipeline, tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_XAI_ROOT", str(pipeline.path))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = read_notebook()
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    text = "".join(output.get("text", "") for output in outputs if output.output_type == "stream")
    figures = [output for output in outputs if "image/png" in output.get("data", {})]
    assert [output for output in outputs if output.output_type == "error"] == []
    assert f"pipeline folder: {pipeline.path.resolve()}" in text
    accuracy = [line.split(":")[1].strip() for line in text.splitlines() if line.startswith("test accuracy")]
    assert len(accuracy) == 2 and accuracy[0] == accuracy[1]  # the model the notebook loads is the one evaluated
    assert "sample-4.png: predicted 4" in text
    assert "reports/report.html" in text and "gradcam" in text
    assert len(figures) == 5  # training curve, seed methods, every method, the user's image and its maps
