"""Datasets: mirrors, checksums, IDX parsing and the model's input normalisation.

Each dataset is four gzipped IDX files. A mirror is a base URL or a local
folder holding them (gzipped or not). We verify the SHA-256 of the
*decompressed* bytes, because re-compressed copies differ in their .gz bytes
but not in their payload.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_xai.errors import UserError
from mnist_xai.files import atomic_write_bytes, repo_root

log = logging.getLogger(__name__)

MIRRORS_ENV = "MNIST_XAI_MIRRORS"
"""Comma-separated mirrors tried before the built-in ones; `{dataset}` is replaced by the dataset name."""

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class Dataset:
    name: str
    class_names: tuple[str, ...]
    sha256: dict[str, str]  # decompressed IDX file name -> SHA-256
    mirrors: tuple[str, ...]  # tried in order after MNIST_XAI_MIRRORS and the committed copy


DATASETS = {
    "mnist": Dataset(
        name="mnist",
        class_names=tuple(str(d) for d in range(10)),
        sha256={
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",  # torchvision's mirrors, in its order
            "http://yann.lecun.com/exdb/mnist/",
        ),
    ),
    "fashion-mnist": Dataset(
        name="fashion-mnist",
        class_names=(
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        ),
        sha256={
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "/usr/share/datasets/fashion-mnist",  # Debian package dataset-fashion-mnist
        ),
    ),
}

# The model's input: pixels scaled to [0, 1], then standardised with MNIST's
# mean and std. One normalisation for every dataset keeps "black" (pixel 0) at
# one known value, which the deletion metric and the IG baseline rely on.
MEAN = 0.1307
STD = 0.3081
BLACK = float((np.float32(0.0) - np.float32(MEAN)) / np.float32(STD))
"""A black pixel as the model sees it: exactly what normalize() computes in float32, so that a patch filled with
it equals the image's own background bit for bit."""

DOWNLOAD_TIMEOUT_S = 15


class DataError(UserError):
    """A dataset file is missing, corrupt, or not what it claims to be."""


def get_dataset(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}") from None


def mirrors_for(dataset: Dataset) -> list[str]:
    """The mirrors to try, in order: MNIST_XAI_MIRRORS, the copy committed in the repository that runs
    (archives/<dataset>/, so the default works offline), then the built-in ones."""
    extra = [m.strip().replace("{dataset}", dataset.name) for m in os.environ.get(MIRRORS_ENV, "").split(",")]
    committed = repo_root() / "archives" / dataset.name
    return [m for m in extra if m] + [str(committed)] + list(dataset.mirrors)


def _is_url(mirror: str) -> bool:
    return mirror.startswith(("http://", "https://", "file://"))


def _fetch(mirror: str, name: str) -> bytes:
    """The decompressed bytes of IDX file `name` from one mirror."""
    if _is_url(mirror):
        url = mirror.rstrip("/") + "/" + name + ".gz"
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            return gzip.decompress(response.read())
    folder = Path(mirror)
    if (folder / (name + ".gz")).is_file():
        return gzip.decompress((folder / (name + ".gz")).read_bytes())
    if (folder / name).is_file():
        return (folder / name).read_bytes()
    raise FileNotFoundError(f"neither {name}.gz nor {name} in {folder}")


def fetch_verified(dataset: Dataset, name: str, mirrors: list[str]) -> bytes:
    """Try each mirror in turn; return the first payload whose SHA-256 matches."""
    tried = []
    for mirror in mirrors:
        try:
            payload = _fetch(mirror, name)
        except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as error:
            reason = f"{type(error).__name__}: {error}"
        else:
            digest = hashlib.sha256(payload).hexdigest()
            if digest == dataset.sha256[name]:
                return payload
            reason = f"checksum mismatch (sha256 {digest[:12]}..., expected {dataset.sha256[name][:12]}...)"
        log.warning("mirror %s failed for %s: %s", mirror, name, reason)
        tried.append(f"{mirror} ({reason})")
    raise DataError(
        f"could not get a verified {name} for {dataset.name}; tried: {'; '.join(tried)}. "
        f"Point the stage at a local copy with {MIRRORS_ENV}=/path/to/folder (holding {name}.gz)"
    )


def download(dataset_name: str, out_dir: Path) -> list[Path]:
    """Fetch and verify all four IDX files of a dataset into `out_dir`.

    Every file is verified before any is written, so a failure leaves `out_dir`
    as it was.
    """
    dataset = get_dataset(dataset_name)
    mirrors = mirrors_for(dataset)
    payloads = {name: fetch_verified(dataset, name, mirrors) for name in dataset.sha256}
    for name, payload in payloads.items():
        parse_idx(payload, name)  # belt and braces: the header must match the payload
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, payload in payloads.items():
        atomic_write_bytes(out_dir / name, payload)
        written.append(out_dir / name)
    return written


def parse_idx(payload: bytes, name: str = "IDX file") -> np.ndarray:
    """Parse an IDX file of unsigned bytes (magic 0x00000801 or 0x00000803)."""
    if len(payload) < 8:
        raise DataError(f"{name}: truncated IDX header ({len(payload)} bytes)")
    zero, dtype_code, ndim = payload[0:2], payload[2], payload[3]
    if zero != b"\x00\x00" or dtype_code != 0x08 or ndim not in (1, 3):
        raise DataError(
            f"{name}: bad IDX magic number 0x{payload[:4].hex()} "
            "(expected 0x00000801 for labels or 0x00000803 for images); re-run the download stage"
        )
    header_len = 4 + 4 * ndim
    if len(payload) < header_len:
        raise DataError(f"{name}: truncated IDX header")
    shape = tuple(int.from_bytes(payload[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape)) + header_len
    if len(payload) != expected:
        raise DataError(f"{name}: IDX dimensions {shape} need {expected} bytes but the file has {len(payload)}")
    return np.frombuffer(payload, dtype=np.uint8, offset=header_len).reshape(shape).copy()  # writable


def load_split(data_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, 28, 28] and labels int64 [N] of split 'train' or 'test'."""
    if split not in SPLIT_FILES:
        raise DataError(f"unknown split {split!r}: choose 'train' or 'test'")
    data_dir = Path(data_dir)
    image_file, label_file = (data_dir / name for name in SPLIT_FILES[split])
    for path in (image_file, label_file):
        if not path.is_file():
            raise DataError(f"{path} is missing: run the download stage (dvc repro download)")
    images = parse_idx(image_file.read_bytes(), image_file.name)
    labels = parse_idx(label_file.read_bytes(), label_file.name)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{image_file.name}: expected images of shape [N, 28, 28], got {list(images.shape)}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{label_file.name}: expected {len(images)} labels, got shape {list(labels.shape)}")
    return images, labels.astype(np.int64)


def normalize(images):
    """uint8 images [N, 28, 28] (array or tensor) -> the model's float32 input tensor [N, 1, 28, 28]."""
    import torch  # here, so that importing this module (params checks, downloads) stays fast

    images = torch.as_tensor(images)
    return ((images.float() / 255.0 - MEAN) / STD).unsqueeze(1)


def background_images(images: np.ndarray, n: int, seed: int):
    """n training images drawn at random with `seed` (without replacement), normalised: the baseline distribution
    of Expected Gradients, GradientShap and DeepLiftShap."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(images), size=min(n, len(images)), replace=False))
    return normalize(images[chosen])


def stratified_indices(labels: np.ndarray, n: int, seed: int, always: np.ndarray | None = None) -> np.ndarray:
    """`n` indices balanced over classes that include the `always` ones (the misclassified images);
    sorted. When the `always` indices exceed half of `n`, a class-balanced half of them is taken, so
    a weak model's errors cannot crowd out the correctly classified images."""
    rng = np.random.default_rng(seed)
    candidates = np.unique(np.asarray(always if always is not None else [], dtype=np.int64))
    always = _balanced(labels, candidates, n // 2, rng) if len(candidates) > n // 2 else candidates
    rest = np.setdiff1d(np.arange(len(labels)), candidates)
    chosen = np.concatenate([always, _balanced(labels, rest, n - len(always), rng, start=always)])
    return np.sort(chosen).astype(np.int64)


def _balanced(labels: np.ndarray, candidates: np.ndarray, count: int, rng: np.random.Generator,
              start: np.ndarray | None = None) -> np.ndarray:
    """`count` of `candidates`, taken from the class with the fewest picks so far (counting `start`)."""
    classes = np.unique(labels)
    pools = {c: list(rng.permutation(candidates[labels[candidates] == c])) for c in classes}
    picks = {c: int(np.sum(labels[start] == c)) if start is not None else 0 for c in classes}
    chosen: list[int] = []
    while len(chosen) < count:
        open_classes = [c for c in classes if pools[c]]
        if not open_classes:
            break
        c = min(open_classes, key=lambda k: picks[k])
        chosen.append(int(pools[c].pop()))
        picks[c] += 1
    return np.array(chosen, dtype=np.int64)
