"""The tables of device-out/bench/run.sh, from its logs (copied there by scripts/gpu-bench.sh).

    python bench_summary.py LOG_DIR ARCH...

LOG_DIR holds status.tsv (arch, run, status, seconds per line; status ok, failed, timeout or
skipped) and each run's log, <run>-<arch>.log. Prints the throughput table (output tokens/s of
each run, tandem / the best transformers run that finished, the executor's idle time) and the
decode-step table (`tandem bench decode` rows: CUDA graphs on, off, on with the scalar
decode-attention kernel instead of the tensor-core one, on with every product on cuBLAS, and
on without programmatic dependent launch),
then what `--gemm auto` timed and picked per product shape. A number that is missing
prints as the run's status when it timed out or was skipped, else "-": the table never comes out
blank or half-printed because one run failed.
"""

import os
import re
import sys

THROUGHPUT = [("tandem", "tandem"), ("tandem-noov", "no-overlap"), ("tandem-nographs", "no-graphs"),
              ("hf", "hf best"), ("hf-defaults", "hf defaults")]
DECODE = [("decode", "graphs"), ("decode-nographs", "no graphs"), ("decode-scalar", "scalar attn"),
          ("decode-cublas", "cublas gemm"), ("decode-nopdl", "no pdl")]


def read(log_dir, run, arch):
    try:
        with open(os.path.join(log_dir, f"{run}-{arch}.log"), errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def statuses(log_dir):
    st = {}
    try:
        with open(os.path.join(log_dir, "status.tsv")) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) >= 3:
                    st[(parts[0], parts[1])] = parts[2]
    except OSError:
        pass
    return st


def rate(run, text):
    """Output tokens/s a run printed, or None."""
    if run.startswith("hf"):
        m = re.search(r"^transformers generate_batch \S+ \S+ ([0-9.]+)", text, re.M)
    else:
        m = re.search(r"([0-9.]+) output tokens/s", text)
    return float(m.group(1)) if m else None


def missing(st, arch, run):
    s = st.get((arch, run))
    return s if s in ("timeout", "skipped") else "-"


def main():
    log_dir, archs = sys.argv[1], sys.argv[2:]
    st = statuses(log_dir)
    head = ["model"] + [label for _, label in THROUGHPUT] + ["ratio", "idle"]
    print()
    print("output tokens/s (ratio: tandem / the faster transformers run that finished)")
    print(f"{head[0]:<14}" + "".join(f"{h:>13}" for h in head[1:]))
    for arch in archs:
        rates = {run: rate(run, read(log_dir, run, arch)) for run, _ in THROUGHPUT}
        cells = [f"{rates[r]:.1f}" if rates[r] is not None else missing(st, arch, r)
                 for r, _ in THROUGHPUT]
        hf = [rates[r] for r in ("hf", "hf-defaults") if rates[r]]
        ratio = f"{rates['tandem'] / max(hf):.2f}" if rates["tandem"] and hf else "-"
        m = re.search(r"idle between steps ([0-9.]+)%", read(log_dir, "tandem", arch))
        idle = f"{m.group(1)}%" if m else "-"
        print(f"{arch:<14}" + "".join(f"{c:>13}" for c in cells + [ratio, idle]))

    print()
    print("decode step (tandem bench decode): median ms, memory roofline ms "
          "(weights + KV read / copy bandwidth)")
    print(f"{'model':<14} {'run':>11} {'batch':>6} {'context':>8} {'ms/step':>10} "
          f"{'roofline':>10} {'step/roof':>10} {'copy GB/s':>10}")
    for arch in archs:
        for run, graphs in DECODE:
            text = read(log_dir, run, arch)
            m = re.search(r"copy bandwidth: ([0-9.]+) GB/s", text)
            copy = m.group(1) if m else "-"
            rows = [line.split("\t")[1:6] for line in text.splitlines()
                    if line.startswith("DECODE\t") and len(line.split("\t")) == 6]
            if not rows:
                print(f"{arch:<14} {graphs:>11} {missing(st, arch, run):>6}")
            for b, ctx, ms, roof, ratio in rows:
                print(f"{arch:<14} {graphs:>11} {b:>6} {ctx:>8} {ms:>10} {roof:>10} {ratio:>10} "
                      f"{copy:>10}")
    # What --gemm auto timed and picked per product shape (the graphs run's tuning).
    for arch in archs:
        text = read(log_dir, "decode", arch)
        lines = text.splitlines()
        if any(line.startswith("gemm tuning") for line in lines):
            print()
            print(f"{arch}: " + next(line for line in lines if line.startswith("gemm tuning")))
            for line in lines:
                if line.startswith("  ") and "->" in line:
                    print(line)


if __name__ == "__main__":
    main()
