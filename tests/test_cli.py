"""`mnist-xai explain` end to end: the real command in a subprocess on a trained model, its page in headless
Chromium, and every bad input as one line and exit status 2 with nothing written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.browser import Visit
from tests.conftest import ROOT
from tests.test_user_image import drawn

SEED_METHODS = "saliency,smoothgrad,gradcam,scorecam"


def explain(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`mnist-xai explain ARGS` as a user runs it (python -m, so that it runs without installing too)."""
    return subprocess.run([sys.executable, "-m", "mnist_xai.cli", "explain", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)



@pytest.fixture(scope="module")
def root(tmp_path_factory, trained_model, mnist_dir) -> Path:
    """A pipeline folder as `dvc repro download train` leaves it: params.yaml, models/model.pt, data/mnist;
    no metrics yet."""
    from mnist_xai.model import save_model

    folder = tmp_path_factory.mktemp("root")
    shutil.copy(ROOT / "params.yaml", folder / "params.yaml")
    save_model(trained_model, folder / "models" / "model.pt")
    (folder / "data").mkdir()
    (folder / "data" / "mnist").symlink_to(mnist_dir)
    return folder


@pytest.fixture(scope="module")
def digit(tmp_path_factory, test_split) -> tuple[Path, int]:
    """A real test digit drawn dark on light at 300 x 300, and its label."""
    images, labels = test_split
    path = tmp_path_factory.mktemp("images") / "my digit.png"
    drawn(images[0]).save(path)
    return path, int(labels[0])


@pytest.fixture(scope="module")
def explained(root, digit) -> tuple[subprocess.CompletedProcess, Path]:
    out = root / "reports" / "explain-my_digit.html"
    return explain(digit[0], "--root", root, "--methods", SEED_METHODS), out


def test_explain_writes_one_page_and_says_what_it_found(explained, digit):
    result, out = explained
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{digit[0]}: predicted {digit[1]} (") and "OOD percentile" in lines[0]
    assert lines[-1].startswith(f"wrote {out} (") and out.is_file()
    html = out.read_text()
    for method in SEED_METHODS.split(","):
        assert f"{method} attribution for {digit[0]}" in html
    assert "metrics/quality.json does not exist" in html  # no pipeline run yet: said, not hidden
    assert "http://" not in html and "https://" not in html and "<script" not in html


@pytest.mark.parametrize("width", [1280, 390])
def test_the_page_renders_offline_with_no_errors_and_fits(browser, explained, width):
    visit = Visit(browser, explained[1].as_uri(), width)
    try:
        page = visit.images_and_layout()
        count, broken, missing_alt, overflow = page["count"], page["broken"], page["missing_alt"], page["overflow"]
        text = visit.page.inner_text("body")
        visit.screenshot(f"explain-{width}px.png")
    finally:
        visit.close()
    assert count == 2 + 4 + 4 + 1 and broken == [], broken  # original, input, 4 maps, 4 colour bars, nearest
    assert missing_alt == 0
    assert visit.console_errors == []
    assert visit.external_requests() == []
    assert overflow <= 0, f"{overflow}px of horizontal scroll at {width}px"
    assert "OOD percentile" in text and "How to read this page" in text


def test_hostile_file_names_render_as_text_and_all_methods_run(browser, root, digit, tmp_path):
    from mnist_xai.attribution import METHODS

    folder = tmp_path / "<script>alert(1)<"
    folder.mkdir()
    first = folder / "script>.png"  # the path reads <script>alert(1)</script>.png
    second = tmp_path / "<img src=x onerror=alert(2)>.png"
    shutil.copy(digit[0], first)
    shutil.copy(digit[0], second)
    out = tmp_path / "hostile.html"
    result = explain(first, second, "--root", root, "--all", "--out", out)
    assert result.returncode == 0, result.stderr
    visit = Visit(browser, out.as_uri(), 1280)
    try:
        text = visit.page.inner_text("body")
        scripts = visit.page.evaluate("document.scripts.length")
        injected = visit.page.evaluate("document.querySelectorAll('img[src=x]').length")
    finally:
        visit.close()
    assert visit.dialogs == [] and scripts == 0 and injected == 0 and visit.console_errors == []
    assert f"{folder}/script>.png" in text and "<img src=x onerror=alert(2)>.png" in text
    assert "Summary" in text and all(f"\n{method}" in text for method in METHODS)


def test_default_page_name_for_several_images(root, digit):
    result = explain(digit[0], digit[0], "--root", root, "--methods", "saliency")
    assert result.returncode == 0, result.stderr
    assert (root / "reports" / "explain-my_digit-and-1-more.html").is_file()


def write_quality(root: Path) -> None:
    """metrics/quality.json as the verdicts stage writes it: each metric with its interval, and the verdict."""
    def scores(pointing, deletion, verdict):
        return {"gt_pointing": {"value": pointing, "low": pointing - 0.1, "high": pointing + 0.1},
                "deletion_auc": {"value": deletion, "low": deletion - 0.02, "high": deletion + 0.02},
                "constant_share": 0.0, "degenerate": 0, "verdict": verdict}
    quality = {"chance": 16 / 784, "methods": {"gradcam": scores(0.9, 0.2, "trust"),
                                               "saliency": scores(0.1, 0.1, "do not trust"),
                                               "random": scores(0.02, 0.4, "control")}}
    (root / "metrics").mkdir(exist_ok=True)
    (root / "metrics" / "quality.json").write_text(json.dumps(quality))


def test_pipeline_verdicts_are_read_from_the_verdicts_stage(tmp_path):
    from mnist_xai.cli import pipeline_verdicts
    from mnist_xai.errors import UserError

    assert pipeline_verdicts(tmp_path) is None
    write_quality(tmp_path)
    verdicts = pipeline_verdicts(tmp_path)
    assert verdicts["gradcam"]["verdict"] == "trust" and verdicts["saliency"]["verdict"] == "do not trust"
    assert verdicts["random"]["verdict"] == "control"
    assert verdicts["gradcam"]["scores"]["Deletion AUC ↓"] == pytest.approx((0.2, 0.18, 0.22))
    assert verdicts["gradcam"]["scores"]["Pointing game ↑"] == pytest.approx((0.9, 0.8, 1.0))
    (tmp_path / "metrics" / "quality.json").write_text('{"methods": {"gradcam": {}}}')
    with pytest.raises(UserError, match="not the verdicts stage's output"):
        pipeline_verdicts(tmp_path)
    (tmp_path / "metrics" / "quality.json").write_text("{broken")
    with pytest.raises(UserError, match=r"metrics/quality.json is corrupt .*`dvc repro verdicts`"):
        pipeline_verdicts(tmp_path)


def test_verdicts_name_their_model_and_a_different_model_is_warned_about(root, digit, trained_model, tmp_path):
    from mnist_xai.model import save_model

    scored = tmp_path / "scored"
    scored.mkdir()
    for name in ("params.yaml", "models", "data"):
        (scored / name).symlink_to(root / name)
    write_quality(scored)
    same = explain(digit[0], "--root", scored, "--methods", "gradcam,saliency", "--out", tmp_path / "same.html")
    assert same.returncode == 0 and same.stderr == "", same.stderr
    page = (tmp_path / "same.html").read_text()
    assert 'class="verdict trust">trust<' in page and 'class="verdict no">do not trust<' in page
    assert "are for another model" not in page

    other = tmp_path / "other.pt"
    state = {name: tensor.clone() for name, tensor in trained_model.state_dict().items()}
    state["fc2.bias"] += 1.0
    model = type(trained_model)()
    model.load_state_dict(state)
    save_model(model, other)
    stale = explain(digit[0], "--root", scored, "--model", other, "--methods", "gradcam", "--out",
                    tmp_path / "stale.html")
    assert stale.returncode == 0
    assert stale.stderr.startswith("warning: the pipeline's verdicts are for model ") and stale.stderr.count("\n") == 1
    assert "are for another model" in (tmp_path / "stale.html").read_text()


def test_without_a_pipeline_folder_it_uses_the_seed_methods_and_the_committed_mnist(digit, root, tmp_path):
    result = explain(digit[0], "--model", root / "models" / "model.pt", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    html = (tmp_path / "reports" / "explain-my_digit.html").read_text()
    assert "default params (params.yaml not found)" in html and "OOD percentile" in html
    assert [m for m in ("saliency", "smoothgrad", "gradcam", "scorecam") if f"{m} attribution for" in html] == \
        ["saliency", "smoothgrad", "gradcam", "scorecam"]


def _bad_input(kind: str, folder: Path, digit: Path, root: Path) -> list:
    image, model = folder / "input.png", root / "models" / "model.pt"
    if kind == "not an image":
        image.write_text("hello\n")
    elif kind == "truncated":
        image.write_bytes(digit.read_bytes()[:300])
    elif kind == "empty":
        image.write_bytes(b"")
    elif kind == "decompression bomb":
        from tests.test_user_image import _bomb_png

        image.write_bytes(_bomb_png(30000, 30000))
    else:
        shutil.copy(digit, image)
    if kind == "missing model":
        model = folder / "no-such-model.pt"
    elif kind == "other architecture":
        import torch

        model = folder / "linear.pt"
        torch.save(torch.nn.Linear(784, 10).state_dict(), model)
    arguments = [image, "--root", root, "--model", model, "--out", folder / "out" / "page.html"]
    extra = {"unknown method": ["--methods", "gradcam,smoothgrad_typo"], "empty method list": ["--methods", ","],
             "unknown option": ["--colour", "red"]}
    return arguments + extra.get(kind, [])


@pytest.mark.parametrize("kind, message", [
    ("not an image", "is not an image this tool reads: give a PNG, JPEG, BMP or GIF"),
    ("truncated", "is truncated or corrupt"),
    ("empty", "is empty (0 bytes)"),
    ("decompression bomb", "is too large to decode safely"),
    ("missing model", "no-such-model.pt is missing"),
    ("other architecture", "does not match the MnistCNN architecture"),
    ("unknown method", "unknown attribution method 'smoothgrad_typo' (did you mean 'smoothgrad'?)"),
    ("empty method list", "--methods is empty"),
    ("unknown option", "unrecognized arguments: --colour red"),
])
def test_bad_input_is_one_line_and_exit_2_with_nothing_written(kind, message, digit, root, tmp_path):
    result = explain(*_bad_input(kind, tmp_path, digit[0], root))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "out").exists()


def test_out_being_a_folder_is_refused(digit, root, tmp_path):
    result = explain(digit[0], "--root", root, "--out", tmp_path)
    assert result.returncode == 2 and result.stderr == f"error: --out {tmp_path} is a folder: give a file name, " \
        f"e.g. {tmp_path / 'explain.html'}\n"
