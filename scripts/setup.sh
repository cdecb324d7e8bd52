# Sourced by scripts/run.sh and scripts/test.sh: idempotent setup of .venv, camexp and the data.
#   camexp_setup [EXTRAS]     -> .venv with camexp installed (editable) with pip extras EXTRAS:
#                                "launchers" (sweep launcher plugins), "dev" (pytest, ruff, launchers)
#   camexp_fashion_mnist      -> make Fashion-MNIST available, or say how (returns 1)
set -euo pipefail

CAMEXP_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CAMEXP_VENV:-$CAMEXP_ROOT/.venv}"
PY="$VENV/bin/python"
FMNIST_DEBIAN=/usr/share/datasets/fashion-mnist

say() { printf 'camexp-setup: %s\n' "$*" >&2; }

camexp_setup() {
  # $1: pip extras, comma-separated: "launchers" (Hydra's joblib and submitit launcher plugins,
  # for hydra/launcher=parallel|slurm|local_submitit), "dev" (pytest, ruff and the launchers).
  local extra="${1:-}"
  if [ ! -x "$PY" ]; then
    say "creating $VENV"
    python3 -m venv "$VENV"
  fi
  # Reinstall only when pyproject.toml changed, or for extras not installed since it did.
  local hash stamp
  hash="$(sha1sum < "$CAMEXP_ROOT/pyproject.toml" | cut -c1-12)"
  stamp="$VENV/.camexp-installed-$hash-${extra//,/+}"
  if [ ! -f "$stamp" ]; then
    local target="$CAMEXP_ROOT"
    [ -n "$extra" ] && target="$CAMEXP_ROOT[$extra]"
    say "installing camexp${extra:+[$extra]} into $VENV (first time: torch, a few minutes)"
    "$PY" -m pip install --quiet --disable-pip-version-check -e "$target" 2>&1 \
      | grep -v "^WARNING: Location" >&2 || true
    "$PY" -c "import camexp, torch, timm, hydra" \
      || { say "installation failed; see the pip output above"; return 1; }
    if [[ ",$extra," == *,launchers,* || ",$extra," == *,dev,* ]]; then
      "$PY" -c "import hydra_plugins.hydra_joblib_launcher, hydra_plugins.hydra_submitit_launcher" \
        || { say "the launcher plugins did not install; pip install -e '.[launchers]'"; return 1; }
    fi
    find "$VENV" -maxdepth 1 -name '.camexp-installed-*' ! -name ".camexp-installed-$hash-*" \
      -delete
    touch "$stamp"
  fi
}

fmnist_present() {
  local d
  for d in "$FMNIST_DEBIAN" "$CAMEXP_ROOT/data/fashion-mnist" "$CAMEXP_ROOT/data/FashionMNIST/raw"; do
    if ls "$d"/train-images-idx3-ubyte* >/dev/null 2>&1; then return 0; fi
  done
  return 1
}

camexp_fashion_mnist() {
  fmnist_present && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing the Debian package dataset-fashion-mnist"
    if apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 \
           && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; }; then
      fmnist_present && return 0
    fi
    say "apt-get could not install dataset-fashion-mnist"
  fi
  say "trying torchvision's download into $CAMEXP_ROOT/data"
  if "$PY" -c "import torchvision; torchvision.datasets.FashionMNIST('$CAMEXP_ROOT/data', download=True)" \
      >/dev/null 2>&1 && fmnist_present; then
    return 0
  fi
  say "Fashion-MNIST is not available: install it with 'sudo apt-get install dataset-fashion-mnist'" \
      "(files in $FMNIST_DEBIAN), or put the four idx .gz files in $CAMEXP_ROOT/data/fashion-mnist"
  return 1
}
