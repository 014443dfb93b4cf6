# Installs the Debian packages celeroot's scripts need, when missing. Sourced by
# scripts/test.sh and scripts/demo.sh. Usage: ensure_packages CMD:PACKAGE ...
# where CMD is a command name, or an absolute path that the package installs.
ensure_packages() {
  local missing=() pair cmd pkg
  for pair in "$@"; do
    cmd=${pair%%:*}
    pkg=${pair#*:}
    case $cmd in
      /*) [ -e "$cmd" ] || missing+=("$pkg") ;;
      *) command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg") ;;
    esac
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing: ${missing[*]}"
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

require_cargo() {
  command -v cargo >/dev/null 2>&1 || {
    echo "error: cargo is not installed (install Rust with rustup: https://rustup.rs)" >&2
    exit 1
  }
}
