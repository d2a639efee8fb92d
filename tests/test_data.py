import gzip
import hashlib
import logging

import numpy as np
import pytest

from mnist_xai import data
from mnist_xai.data import DataError
from tests.conftest import ARCHIVES, ROOT


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_parse_idx_reads_images_and_labels():
    images = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
    assert np.array_equal(data.parse_idx(idx_bytes(images)), images)
    assert np.array_equal(data.parse_idx(idx_bytes(np.array([7, 3]))), [7, 3])


@pytest.mark.parametrize("payload, message", [
    (b"\x00\x00\x08", "truncated IDX header"),
    (b"\x12\x34\x08\x03" + bytes(12), "bad IDX magic number 0x12340803"),
    (b"\x00\x00\x0d\x03" + bytes(12), "bad IDX magic number"),  # float, not unsigned bytes
    (idx_bytes(np.zeros((2, 28, 28)))[:-1], "need 1584 bytes but the file has 1583"),
])
def test_parse_idx_rejects_bad_files(payload, message):
    with pytest.raises(DataError, match=message):
        data.parse_idx(payload)


def test_load_split_checks_dimensions(tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((3, 27, 28))))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(3)))
    with pytest.raises(DataError, match=r"expected images of shape \[N, 28, 28\], got \[3, 27, 28\]"):
        data.load_split(tmp_path, "test")
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((3, 28, 28))))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(2)))
    with pytest.raises(DataError, match="expected 3 labels"):
        data.load_split(tmp_path, "test")


def test_real_mnist_matches_the_published_label_counts(mnist_dir):
    _, train_labels = data.load_split(mnist_dir, "train")
    images, test_labels = data.load_split(mnist_dir, "test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(train_labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_committed_archives_verify_with_no_mirror_set(tmp_path, monkeypatch, dataset):
    """The default works offline: the copy the repository commits, found from the repository that runs (here the
    working directory), passes the checksums with no mirror variable set."""
    monkeypatch.delenv(data.MIRRORS_ENV, raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(ROOT)
    written = data.download(dataset, tmp_path / dataset)
    assert sorted(p.name for p in written) == sorted(data.DATASETS[dataset].sha256)


def test_archives_are_found_in_the_repository_that_runs_not_the_package(tmp_path, monkeypatch):
    """A copy run with another checkout's environment reads its own archives: the package's own folder (this
    checkout) is never consulted."""
    monkeypatch.delenv(data.MIRRORS_ENV, raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "copy"))
    assert data.mirrors_for(data.DATASETS["mnist"])[0] == str(tmp_path / "copy" / "archives" / "mnist")
    assert not any(str(ROOT) in mirror for mirror in data.mirrors_for(data.DATASETS["mnist"]))


def _bad_mirror(tmp_path, name="bad"):
    """A folder with the MNIST file names but the wrong content."""
    folder = tmp_path / name
    folder.mkdir()
    for file_name in data.DATASETS["mnist"].sha256:
        (folder / f"{file_name}.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(3))))
    return folder


def test_wrong_checksum_logs_one_line_and_tries_the_next_mirror(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(data.MIRRORS_ENV, f"{_bad_mirror(tmp_path)},{ARCHIVES / 'mnist'}")
    with caplog.at_level(logging.WARNING, logger="mnist_xai.data"):
        data.download("mnist", tmp_path / "out")
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 4  # one line per file, each naming the mirror and the mismatch
    assert all("checksum mismatch" in w and str(tmp_path / "bad") in w and "\n" not in w for w in warnings)


def test_every_mirror_failing_lists_what_was_tried_and_writes_nothing(tmp_path, monkeypatch):
    original = data.DATASETS["mnist"]
    monkeypatch.setitem(data.DATASETS, "mnist", data.Dataset(
        "mnist", original.class_names, original.sha256, mirrors=(str(tmp_path / "missing"),)))
    monkeypatch.chdir(tmp_path)  # a repository without archives: the committed copy is not there to rescue it
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for file_name in original.sha256:  # real archives, truncated
        archive = (ARCHIVES / "mnist" / f"{file_name}.gz").read_bytes()
        (corrupt / f"{file_name}.gz").write_bytes(archive[: len(archive) // 2])
    monkeypatch.setenv(data.MIRRORS_ENV, f"{_bad_mirror(tmp_path)},{corrupt}")
    out = tmp_path / "out"
    with pytest.raises(DataError) as error:
        data.download("mnist", out)
    message = str(error.value)
    assert "\n" not in message
    for tried in ("bad", "corrupt", "missing"):
        assert str(tmp_path / tried) in message
    assert "checksum mismatch" in message and "EOFError" in message and data.MIRRORS_ENV in message
    assert not out.exists()


def test_mirrors_env_goes_first_and_expands_dataset(monkeypatch):
    monkeypatch.setenv(data.MIRRORS_ENV, "/a/{dataset}, https://example.org/{dataset}/")
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    mirrors = data.mirrors_for(data.DATASETS["fashion-mnist"])
    assert mirrors[:3] == ["/a/fashion-mnist", "https://example.org/fashion-mnist/", str(ARCHIVES / "fashion-mnist")]
    assert mirrors[3:] == list(data.DATASETS["fashion-mnist"].mirrors)
    assert mirrors[-1] == "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist
    assert data.DATASETS["mnist"].mirrors[0] == "https://ossci-datasets.s3.amazonaws.com/mnist/"


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'cifar': choose one of mnist, fashion-mnist"):
        data.get_dataset("cifar")


def test_fashion_mnist_downloads_and_verifies(tmp_path, monkeypatch):
    monkeypatch.delenv(data.MIRRORS_ENV, raising=False)
    monkeypatch.chdir(ROOT)
    written = data.download("fashion-mnist", tmp_path)
    payload = (tmp_path / "t10k-labels-idx1-ubyte").read_bytes()
    assert hashlib.sha256(payload).hexdigest() == data.DATASETS["fashion-mnist"].sha256["t10k-labels-idx1-ubyte"]
    assert len(written) == 4
    _, labels = data.load_split(tmp_path, "test")
    assert np.bincount(labels).tolist() == [1000] * 10


def test_normalize_gives_the_model_input():
    x = data.normalize(np.array([[[0] * 28] * 28, [[255] * 28] * 28], dtype=np.uint8))
    assert x.shape == (2, 1, 28, 28) and str(x.dtype) == "torch.float32"
    assert x[0].unique().item() == pytest.approx(data.BLACK)
    assert x[1].unique().item() == pytest.approx((1 - data.MEAN) / data.STD)


def test_stratified_indices_balance_classes_and_keep_misclassified(test_split):
    _, labels = test_split
    always = np.array([5, 17, 300])
    chosen = data.stratified_indices(labels, 100, seed=0, always=always)
    assert len(chosen) == 100 and len(set(chosen)) == 100 and np.all(np.diff(chosen) > 0)
    assert set(always) <= set(chosen)
    assert np.bincount(labels[chosen], minlength=10).tolist() == [10] * 10
    assert np.array_equal(chosen, data.stratified_indices(labels, 100, seed=0, always=always))


def test_stratified_indices_cap_errors_at_half(test_split):
    _, labels = test_split
    many_wrong = np.arange(0, 10000, 7)
    chosen = data.stratified_indices(labels, 20, seed=0, always=many_wrong)
    assert len(chosen) == 20 and np.isin(chosen, many_wrong).sum() == 10
