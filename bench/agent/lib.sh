# Shared by bench/agent/run, bench/agent/gate and tests/static-agent/run (sourced, not run):
# tool installation; `build_static_agent`, which builds ps-agent as Dockerfile.agent does and
# sets $agent; and `start_emulator`, which starts ps-emulator ($EMU) on $EMU_LISTEN (default
# 127.0.0.1:0) with five secrets (s1..s5 = `bench_value 1`..`bench_value 5`, secret canaries as
# every seed value is: crates/testkit/canaries.txt) and exports the agent's environment
# to fetch them into $root (tmpfs when available). It serves $EMU_TLS_CERT/$EMU_TLS_KEY when set
# (the caller then writes $work/ca.pem), else a generated certificate whose CA goes to
# $work/ca.pem. Sets $work, $root, $origin; cleans up on exit, calling `cleanup_extra` first
# when the caller defines it.

need() { command -v "$1" >/dev/null 2>&1; }
install() { # install <command> <debian package>
  need "$1" && return 0
  echo "$1 is missing: installing $2 with apt-get" >&2
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  elif need sudo; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  fi
  need "$1" || { echo "FAIL: $1 could not be installed (apt-get install $2)" >&2; exit 1; }
}
# The value of secret s$1 (what the agent must write).
bench_value() {
  case "$1" in
    3 | 4) echo "PSCANARY-secret-text-bench-value-$1" ;;
    *) echo "PSCANARY-secret-pw-bench-value-$1" ;;
  esac
}
work="$(mktemp -d)"
shm_root="/dev/shm/ps-agent-bench.$$"
emu_pid=""
cleanup() {
  if declare -F cleanup_extra >/dev/null; then cleanup_extra; fi
  [ -n "$emu_pid" ] && kill "$emu_pid" 2>/dev/null && wait "$emu_pid" 2>/dev/null
  # For scripts/canary-check (scripts/test sets PS_LOG_DIR): the emulator's and the agent's output.
  if [ -n "${PS_LOG_DIR:-}" ]; then
    local dest="$PS_LOG_DIR/$(echo "${0#./}" | tr / -)"
    mkdir -p "$dest" && find "$work" -maxdepth 1 -type f \( -name '*.out' -o -name '*.err' -o -name '*.txt' -o -name '*.log' \) \
      -exec cp {} "$dest/" \; 2>/dev/null || true
  fi
  rm -rf "$work" "$shm_root"
}
trap cleanup EXIT

# Builds ps-agent exactly as Dockerfile.agent does (scripts/build-static); sets $agent.
build_static_agent() {
  agent="$(scripts/build-static ps-agent release-small)" || { echo "FAIL  scripts/build-static ps-agent failed" >&2; exit 1; }
}

start_emulator() {
cat >"$work/seed.yaml" <<'EOF'
users:
  - {name: svc-bench, groups: [bench]}
api_keys:
  - {key: "PSCANARY-apikey-bench-0123456789abcdef0123456789", users: [svc-bench]}
safes:
  - name: bench
    readers: [bench]
    folders:
      - name: app
        secrets:
          - {title: s1, type: credential, username: u1, password: "PSCANARY-secret-pw-bench-value-1"}
          - {title: s2, type: credential, username: u2, password: "PSCANARY-secret-pw-bench-value-2"}
          - {title: s3, type: text, text: "PSCANARY-secret-text-bench-value-3"}
          - {title: s4, type: text, text: "PSCANARY-secret-text-bench-value-4"}
          - {title: s5, type: credential, username: u5, password: "PSCANARY-secret-pw-bench-value-5"}
EOF

local tls=(--ca-out "$work/ca.pem")
[ -n "${EMU_TLS_CERT:-}" ] && tls=(--tls-cert "$EMU_TLS_CERT" --tls-key "$EMU_TLS_KEY")
"$EMU" --listen "${EMU_LISTEN:-127.0.0.1:0}" --data "$work/seed.yaml" "${tls[@]}" >"$work/emu.out" 2>"$work/emu.err" &
emu_pid=$!
for _ in $(seq 100); do
  grep -q '^listening on ' "$work/emu.out" 2>/dev/null && break
  sleep 0.05
done
origin="$(sed -n 's/^listening on //p' "$work/emu.out" | head -1)"
[ -n "$origin" ] || { echo "FAIL: the emulator did not start:" >&2; cat "$work/emu.err" >&2; exit 1; }

if [ -d /dev/shm ] && [ -w /dev/shm ]; then root="$shm_root"; else root="$work/out"; fi
PS_AGENT_CONFIG="$(python3 - "$origin" "$root" <<'EOF'
import json, sys
origin, root = sys.argv[1], sys.argv[2]
print(json.dumps({
    "version": 1,
    "passwordSafe": {"url": origin + "/BeyondTrust/api/public/v3", "apiVersion": "3.1"},
    "root": root,
    "secrets": [{"name": f"s{i}", "path": f"bench/app/s{i}"} for i in range(1, 6)],
}))
EOF
)"
export PS_AGENT_CONFIG PS_CA_FILE="$work/ca.pem" PS_API_KEY="PSCANARY-apikey-bench-0123456789abcdef0123456789" PS_RUNAS=svc-bench
export PS_LOG_LEVEL=warn
}
