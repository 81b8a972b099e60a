# Sourced on a GPU machine by device-out/run.sh and device-out/bench/run.sh (scripts/gpu-check.sh
# copies it into device-out/): cuBLAS (libcublas.so.13) lives in the Python environment's
# nvidia/*/lib folders, so they go on LD_LIBRARY_PATH. `nvidia` may be a namespace package
# (no __file__), hence the second form.
nv=$(python3 -c 'import nvidia, os; print(os.path.dirname(nvidia.__file__))' 2>/dev/null \
     || python3 -c 'import nvidia; print(list(nvidia.__path__)[0])' 2>/dev/null || true)
if [[ -n "$nv" ]]; then
  for d in "$nv"/*/lib "$nv"/cu13/lib; do [[ -d "$d" ]] && LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done
  export LD_LIBRARY_PATH
fi
# scripts/gpu-check.sh gzips the executables in bin/ next to this file, to stay under the carry
# limit (their embedded PTX compresses ~4x): restore them in place the first time (gzip keeps
# their mode bits).
bin_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/bin"
for gz in "$bin_dir"/*.gz; do
  [[ -e "$gz" ]] || continue
  gunzip -f "$gz" 2>/dev/null || python3 - "$gz" <<'PY'
import gzip, os, shutil, sys
src = sys.argv[1]
dst = src[:-3]
with gzip.open(src, "rb") as i, open(dst, "wb") as o:
    shutil.copyfileobj(i, o)
os.chmod(dst, 0o755)
os.remove(src)
PY
done
