#!/usr/bin/env bash
# The project's commands. Each sets up what it needs first, and only what is missing:
#   ./dev.sh repro [dvc repro args]   create .venv, install, run the pipeline (dvc repro)
#   ./dev.sh test [pytest args]       create .venv, install with test extras, run the test suite
#   ./dev.sh ui                       open the MLflow UI on the embedded store (http://127.0.0.1:5000)
#   ./dev.sh bench [script args]      run the attribution benchmark (bench/attribution.py)
#   ./dev.sh lint                     ruff
#   ./dev.sh notebook                 open notebooks/walkthrough.ipynb in JupyterLab (installs it on first use)
#   ./dev.sh docs [serve]             build the documentation site into site/ (--strict, offline), or serve it
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
export MLFLOW_DISABLE_TELEMETRY=true
export PATH="$PWD/$VENV/bin:$PATH"

log() { printf '[dev.sh] %s\n' "$*" >&2; }

python_311() {
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))'; then
      echo "$candidate"; return
    fi
  done
  log "Python 3.11 or newer is required (python3.11 or python3 on PATH)"; exit 1
}

# setup EXTRAS: make .venv and install the project with EXTRAS ("", "test", "docs" or "notebook"), pinned by
# constraints.txt; skipped when the same pyproject.toml + constraints.txt were installed before.
setup() {
  local extras=$1 target=. stamp want
  [ -n "$extras" ] && target=".[$extras]"
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$(python_311)" -m venv "$VENV"
  fi
  stamp="$VENV/.installed${extras:+-$extras}"
  want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing $target into $VENV (a few minutes the first time)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c constraints.txt -e "$target"
    echo "$want" > "$stamp"
  fi
}

# What the tests need beyond Python: Chromium (report tests) and PostgreSQL (team-server test).
# Installed with apt when running as root; otherwise the tests say plainly what is missing.
system_packages() {
  local missing=()
  command -v chromium >/dev/null || missing+=(chromium)
  [ -x /usr/lib/postgresql/15/bin/postgres ] || ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      log "installing ${missing[*]} with apt-get"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || log "could not install ${missing[*]}: the tests that need them will say so"
    else
      log "missing ${missing[*]} (install: sudo apt-get install ${missing[*]}); the tests that need them will say so"
    fi
  fi
}

cmd=${1:-help}
[ $# -gt 0 ] && shift
case "$cmd" in
  repro)
    setup ""
    exec dvc repro "$@"
    ;;
  test)
    setup test
    system_packages
    exec python -m pytest "$@"
    ;;
  ui)
    setup ""
    exec mlflow ui --backend-store-uri "sqlite:///$PWD/mlflow.db" --default-artifact-root "$PWD/mlruns" --host 127.0.0.1 --port "${PORT:-5000}"
    ;;
  bench)
    setup test
    exec python bench/attribution.py "$@"
    ;;
  lint)
    setup test
    exec ruff check .
    ;;
  docs)
    setup docs
    export NO_MKDOCS_2_WARNING=1  # Material's banner about its successor, printed on every build
    if [ "${1:-}" = serve ]; then shift; exec mkdocs serve "$@"; fi
    exec mkdocs build --strict "$@"
    ;;
  notebook)
    setup notebook
    root_flag=(); [ "$(id -u)" = 0 ] && root_flag=(--allow-root)  # JupyterLab refuses root without it
    exec jupyter lab "${root_flag[@]}" notebooks/walkthrough.ipynb "$@"
    ;;
  *)
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    ;;
esac
