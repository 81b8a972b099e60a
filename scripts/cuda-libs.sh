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
