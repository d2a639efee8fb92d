"""What every stage script shares: logging set-up and the one-line error contract."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from collections.abc import Callable

from mnist_xai.errors import UserError


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI cancel, `timeout`, `kill`), handled like Ctrl-C: outputs stay as they were, the MLflow
    run is marked KILLED."""


def _terminate(signum, _frame):
    raise Terminated(signal.Signals(signum).name)


def run(main: Callable[[], None]) -> None:
    """Run a stage's main(). A UserError, or a file the system cannot read or write (disk full, permissions),
    becomes one line on stderr and exit status 2; SIGINT and SIGTERM one line and 130 / 143."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # MLflow's schema migrations are noise
    signal.signal(signal.SIGTERM, _terminate)
    try:
        main()
        _record_imports()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:  # the environment, not the code: say which file and why, in one line
        where = f" {error.filename}" if error.filename else ""
        print(f"error: cannot access{where}: {error.strerror or error}; free disk space or fix permissions, "
              "then re-run (the previous outputs are intact: they are replaced only when complete)", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as interrupt:
        terminated = isinstance(interrupt, Terminated)
        print(f"error: {'terminated' if terminated else 'interrupted'}; outputs are unchanged (they are written "
              "atomically)", file=sys.stderr)
        sys.exit(143 if terminated else 130)


IMPORT_LOG = "MNIST_XAI_IMPORT_LOG"
"""When set, each stage appends the files of the mnist_xai modules it loaded to this file (one JSON line): the
test that every stage's dvc.yaml deps cover its code reads it."""


def _record_imports() -> None:
    log_file = os.environ.get(IMPORT_LOG)
    if not log_file:
        return
    files = sorted({module.__file__ for name, module in list(sys.modules.items())
                    if (name == "mnist_xai" or name.startswith("mnist_xai.")) and getattr(module, "__file__", None)})
    record = {"stage": os.environ.get("DVC_STAGE") or os.path.basename(sys.argv[0]), "script": sys.argv[0],
              "modules": files}
    with open(log_file, "a") as handle:
        handle.write(json.dumps(record) + "\n")
