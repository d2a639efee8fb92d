"""The report compares itself with a baseline revision's metrics when report.baseline names one."""

import shutil

import pytest

from tests.helpers import PipelineRepo
from tests.robustness.test_bad_inputs import assert_one_line_failure


@pytest.fixture(scope="module")
def repo(pipeline, tmp_path_factory) -> PipelineRepo:
    path = tmp_path_factory.mktemp("baseline") / "repo"
    shutil.copytree(pipeline.path, path, symlinks=True)
    copy = PipelineRepo(path=path, env=pipeline.env)
    copy.git("add", "dvc.lock")
    copy.git("commit", "-q", "-m", "a baseline with results")
    copy.git("tag", "baseline")
    return copy


def test_report_shows_the_baseline_comparison(repo):
    original = (repo.path / "params.yaml").read_text()
    try:
        repo.update_params({"report": {"baseline": "baseline"}})
        result = repo.stage("report")
        html = (repo.path / "reports/report.html").read_text()
    finally:
        (repo.path / "params.yaml").write_text(original)
    assert result.returncode == 0, result.stderr[-2000:]
    assert '<section id="baseline">' in html and "Compared with baseline" in html
    assert "test accuracy (higher is better)" in html and "gradcam: deletion_auc" in html


def test_unknown_baseline_is_one_clear_line(repo):
    before = (repo.path / "reports/report.html").read_bytes()
    original = (repo.path / "params.yaml").read_text()
    try:
        repo.update_params({"report": {"baseline": "no-such-rev"}})
        result = repo.stage("report")
    finally:
        (repo.path / "params.yaml").write_text(original)
    assert_one_line_failure(result, "report.baseline='no-such-rev': cannot read its metrics")
    assert (repo.path / "reports/report.html").read_bytes() == before
