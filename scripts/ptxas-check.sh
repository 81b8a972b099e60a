#!/usr/bin/env bash
# Assembles every kernel's PTX with `ptxas -v` (sm_90, and sm_80 for the fallback PTX), prints
# registers / shared memory / spills per kernel, and FAILS if any kernel spills (non-zero
# "spill stores" or "spill loads") or does not assemble. Needs no GPU.
#
# The PTX is the one build.rs embeds: this builds `--features cuda` (a no-op when up to date) and
# reads the build script's OUT_DIR from cargo's JSON messages. ptxas comes from beside nvcc
# ($NVCC, else the toolchain venv of scripts/install-cuda-toolchain.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

nvcc="${NVCC:-$(bash scripts/install-cuda-toolchain.sh 2>/dev/null | tail -n1)}"
ptxas="$(dirname "$nvcc")/ptxas"
[[ -x "$ptxas" ]] || { echo "ptxas-check: no ptxas beside $nvcc" >&2; exit 1; }

out_dir=$(cargo build --release --locked --features cuda --message-format=json 2>/dev/null \
  | python3 -c '
import json, sys
dirs = [m["out_dir"] for m in map(json.loads, sys.stdin)
        if m.get("reason") == "build-script-executed" and "tandem" in m["package_id"]]
print(dirs[-1] if dirs else "")')
[[ -n "$out_dir" && -f "$out_dir/kernels.rs" ]] || { echo "ptxas-check: no kernel PTX found (OUT_DIR '$out_dir')" >&2; exit 1; }

status=0
printf '%-22s %-6s %-24s %5s %6s %6s %6s\n' file arch kernel regs smem spill_st spill_ld
for ptx in "$out_dir"/*.ptx; do
  base=$(basename "$ptx" .ptx)          # e.g. rms_norm.sm_90
  file=${base%.*} arch=${base##*.}
  if ! report=$("$ptxas" -v -arch="$arch" "$ptx" -o /dev/null 2>&1); then
    echo "$report"; echo "ptxas-check: $ptx does not assemble" >&2; status=1; continue
  fi
  # ptxas prints, per entry: "Compiling entry function 'NAME'", then the stack/spill line, then
  # "Used N registers, ... M bytes smem".
  while IFS=$'\t' read -r name regs smem st ld; do
    printf '%-22s %-6s %-24s %5s %6s %6s %6s\n' "$file" "$arch" "$name" "$regs" "$smem" "$st" "$ld"
    if [[ "$st" != 0 || "$ld" != 0 ]]; then
      echo "ptxas-check: $name ($file, $arch) spills: $st bytes stored, $ld bytes loaded" >&2
      status=1
    fi
  done < <(python3 -c '
import re, sys
text = sys.stdin.read()
for block in re.split(r"Compiling entry function ", text)[1:]:
    name = re.match(r"\x27([^\x27]+)\x27", block).group(1)
    st = re.search(r"(\d+) bytes spill stores", block)
    ld = re.search(r"(\d+) bytes spill loads", block)
    regs = re.search(r"Used (\d+) registers", block)
    smem = re.search(r"(\d+) bytes smem", block)
    print("\t".join([name, regs.group(1) if regs else "?", smem.group(1) if smem else "0",
                     st.group(1) if st else "?", ld.group(1) if ld else "?"]))
' <<<"$report")
done
if [[ $status -ne 0 ]]; then
  echo "ptxas-check: FAILED" >&2
else
  echo "ptxas-check: no spills"
fi
exit $status
