# Sourced by bench/reliability/storm and watch-faults: builds (or takes) the binaries.
#   AGENT  the ps-agent to run; default: built as Dockerfile.agent builds it (release-small,
#          glibc crt-static), the binary bench/agent/gate checks, so CI builds it once.
#   EMU    the ps-emulator to run; default: the debug build (cargo test builds it too). Its
#          limits, not its speed, set the pace of these runs.
# Tools: installed with apt-get when missing; a tool that cannot be had is an error.
for tool in python3:python3 openssl:openssl; do
  command -v "${tool%%:*}" >/dev/null 2>&1 && continue
  echo "${tool%%:*} is missing: installing ${tool#*:} with apt-get" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${tool#*:}" >/dev/null || true
  command -v "${tool%%:*}" >/dev/null 2>&1 || { echo "FAIL: ${tool%%:*} could not be installed" >&2; exit 1; }
done
if [ -z "${AGENT:-}" ]; then
  AGENT="$(scripts/build-static ps-agent release-small)"
fi
if [ -z "${EMU:-}" ]; then
  cargo build --locked --quiet -p ps-emulator
  EMU="$CARGO_TARGET_DIR/debug/ps-emulator"
fi
[ -x "$AGENT" ] || { echo "FAIL: no agent binary at $AGENT" >&2; exit 1; }
[ -x "$EMU" ] || { echo "FAIL: no emulator binary at $EMU" >&2; exit 1; }
