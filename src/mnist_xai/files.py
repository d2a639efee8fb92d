"""Pipeline files: atomic writes (a stage's output is either complete or absent, never half-written) and
checked reads (a missing or corrupt input is one line that names the stage that re-makes it)."""

from __future__ import annotations

import glob
import json
import os
import tempfile
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from mnist_xai.errors import UserError


def repo_root() -> Path:
    """The repository that runs: DVC_ROOT under `dvc exp run --temp/--queue` (their copies run under .dvc/tmp),
    else the working directory. Never the installed package's own folder: a copy of the repository, or one run
    with another checkout's environment, reads and writes only itself."""
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


@contextmanager
def atomic_file(path: str | Path, mode: str = "wb"):
    """Open a temporary file beside `path`; on success fsync it and os.replace it onto `path`.

    On any error the destination is untouched and the temporary file removed. A
    SIGKILL cannot be caught: it leaves the destination untouched and an orphaned
    `.<name>.*.tmp`, which the next write of the same file clears away.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for orphan in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):  # left by a killed writer
        orphan.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and not error.filename:  # a full disk: say which file could not be written
            raise OSError(error.errno, error.strerror or str(error), str(path)) from error
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_file(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_file(path, "w") as handle:
        handle.write(text)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Strict JSON (NaN and inf are refused: they are not JSON) with sorted keys and a trailing newline, so
    equal content gives equal bytes."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def atomic_write_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Like np.savez_compressed, but byte-identical for equal arrays: numpy stamps each member with the
    current time, we stamp 1980-01-01."""
    with atomic_file(path, "wb") as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


class CorruptFileError(UserError):
    """A pipeline file that a stage reads is missing or unreadable."""


def _unreadable(path: Path, problem: str, stage: str) -> CorruptFileError:
    return CorruptFileError(f"{path} {problem}; restore it with `dvc checkout {path}` or re-make it with "
                            f"`dvc repro {stage}`")


def read_json(path: str | Path, stage: str) -> Any:
    """The parsed JSON file that `stage` writes; a missing or corrupt one is one line naming that stage."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise _unreadable(path, "is missing", stage) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise _unreadable(path, f"is corrupt (not valid JSON: {str(error).splitlines()[0][:120]})", stage) from None


def read_npz(path: str | Path, stage: str, keys: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Every array of a .npz file that `stage` writes (pickles refused), checked to hold `keys`; a missing,
    truncated or incomplete one is one line naming that stage."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise _unreadable(path, "is missing", stage) from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise _unreadable(path, f"is corrupt ({type(error).__name__}: {str(error).splitlines()[0][:120]})",
                          stage) from None
    missing = [key for key in keys if key not in arrays]
    if missing:
        raise _unreadable(path, f"lacks {', '.join(missing)} (written by another version?)", stage)
    return arrays
