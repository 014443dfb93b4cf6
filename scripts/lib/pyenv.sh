# Creates (or reuses) a Python virtualenv with the pinned Celery stack from
# tests/celery/requirements.txt (plus the test-only tools of requirements-test.txt) and
# exports CELEROOT_PYTHON. Sourced by scripts/test.sh
# and scripts/demo.sh after prereqs.sh.
ensure_pyenv() {
  local req="tests/celery/requirements.txt"
  local req_test="tests/celery/requirements-test.txt"
  local hash
  hash=$(cat "$req" "$req_test" | sha256sum | cut -c1-12)
  local dir="${CELEROOT_PYENV:-$HOME/.cache/celeroot/pyenv-$hash}"
  if ! "$dir/bin/python" -c 'import celery, redbeat, redis, aiosmtpd' >/dev/null 2>&1; then
    ensure_packages python3:python3
    if ! python3 -m venv --help >/dev/null 2>&1; then
      ensure_packages venv-missing:python3-venv
    fi
    echo "creating the Celery test environment in $dir"
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" -r "$req_test"
  fi
  export CELEROOT_PYTHON="$dir/bin/python"
}
