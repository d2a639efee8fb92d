"""fingerprints: for each stage script, fingerprints/<script>.txt lists the library code it runs, each file with
its MD5 (see mnist_xai.fingerprints); every other stage depends on its script's file instead of on each module."""

import logging

from mnist_xai import params, stage
from mnist_xai.files import atomic_write_text
from mnist_xai.fingerprints import OUTPUT, fingerprint, stage_scripts

log = logging.getLogger("fingerprints")


def main() -> None:
    params.load()  # it reads none, but like every stage it stops at once on a bad params.yaml
    with stage.work():
        prints = {OUTPUT / f"{script.stem}.txt": fingerprint(script) for script in stage_scripts()}
    for path, text in prints.items():
        atomic_write_text(path, text)
    log.info("%d stage scripts, %d files of code", len(prints), len({line for text in prints.values()
                                                                      for line in text.splitlines()}))


if __name__ == "__main__":
    stage.run(main)
