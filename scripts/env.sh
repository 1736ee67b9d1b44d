# Sourced by the project's scripts: shared caches under $HOME/.cache so warm runs stay fast.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ps-injector/target}"
export GOFLAGS="${GOFLAGS:--mod=mod}"
export GOTOOLCHAIN=local
export GOCACHE="${GOCACHE:-$HOME/.cache/go-build}"
export GOMODCACHE="${GOMODCACHE:-$HOME/go/pkg/mod}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
