#!/usr/bin/env bash
# The local ambient mesh demo: checks that it can run, then runs the narrated `mesh-demo`.
# Called by `make demo` with MESH_BIN_DIR set to the directory of the built binaries.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "demo.sh: the demo creates network namespaces and needs root; run: sudo make demo" >&2
  exit 1
fi

bin_dir=${MESH_BIN_DIR:-${CARGO_TARGET_DIR:-target}/debug}
missing=()
for b in mesh-demo mesh-echo istiod ztunnel cni-agent mesh-cni waypoint; do
  [ -x "$bin_dir/$b" ] || missing+=("$b")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "demo.sh: missing in $bin_dir: ${missing[*]}; run \`cargo build --workspace --bins\` first" >&2
  exit 1
fi
for tool in ip iptables-save tcpdump; do
  command -v "$tool" >/dev/null || { echo "demo.sh: $tool not found; run \`make deps\`" >&2; exit 1; }
done
[ -x /usr/lib/cni/bridge ] || { echo "demo.sh: /usr/lib/cni/bridge missing; install containernetworking-plugins (\`make deps\`)" >&2; exit 1; }

export MESH_BIN_DIR="$bin_dir"
exec "$bin_dir/mesh-demo" --bin-dir "$bin_dir" --echo-bin "$bin_dir/mesh-echo" "$@"
