"""download: fetch the dataset named by base.dataset into data/<dataset>/, verified by SHA-256."""

import logging
from pathlib import Path

from mnist_xai import data, params, stage

log = logging.getLogger("download")


def main() -> None:
    p = params.load("base")
    with stage.work():
        written = data.download(p.base.dataset, Path("data") / p.base.dataset)
    log.info("verified %d files in data/%s", len(written), p.base.dataset)


if __name__ == "__main__":
    stage.run(main)
