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
