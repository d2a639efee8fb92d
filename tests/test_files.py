import json
import math

import pytest

from mnist_xai.files import atomic_write_json


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_json_is_strict_and_a_refused_write_keeps_the_old_file(tmp_path, value):
    """A bare NaN is not JSON (it broke every reader of metrics/quality.json): writing one is an error, and the
    file already there is left as it was."""
    path = tmp_path / "metrics.json"
    atomic_write_json(path, {"score": 0.5})
    with pytest.raises(ValueError, match="not JSON compliant"):
        atomic_write_json(path, {"score": value})
    assert json.loads(path.read_text()) == {"score": 0.5} and list(tmp_path.iterdir()) == [path]


def test_npz_is_byte_identical_for_equal_arrays_and_a_damaged_one_is_named(tmp_path):
    """Equal arrays give equal bytes, the arrays come back exact, and a flipped byte inside a member is caught."""
    import numpy as np

    from mnist_xai.files import CorruptFileError, atomic_write_npz, read_npz

    maps = np.random.default_rng(0).random((50, 28, 28)).astype(np.float32)
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    atomic_write_npz(first, maps=maps, indices=np.arange(50))
    atomic_write_npz(second, maps=maps, indices=np.arange(50))
    assert first.read_bytes() == second.read_bytes()
    assert len(first.read_bytes()) < maps.nbytes  # deflated
    assert np.array_equal(read_npz(first, "explain@x", keys=("maps",))["maps"], maps)
    damaged = bytearray(first.read_bytes())
    damaged[len(damaged) // 3] ^= 0xFF
    first.write_bytes(bytes(damaged))
    with pytest.raises(CorruptFileError, match=r"a.npz is corrupt .*dvc repro explain@x"):
        read_npz(first, "explain@x")
