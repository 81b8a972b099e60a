"""Per-kernel GPU time of a decode step, from an `ncu --csv --page raw` log (profile_decode.sh).

    python ncu_summary.py NCU.csv STEPS

Every kernel the run launched is summed by name and divided by STEPS (the steps `tandem bench
decode` ran, warm-up included: they have the same shapes); kernels that ran fewer than STEPS
times (the bandwidth probe, set-up) are listed apart. Prints one table, largest first.
"""

import csv
import sys
from collections import defaultdict


def rows(path):
    with open(path, errors="replace") as f:
        lines = [line for line in f if line.startswith('"')]  # ncu's own ==PROF== lines aside
    for row in csv.DictReader(lines):
        if row.get("ID", "").isdigit():
            yield row


def main():
    path, steps = sys.argv[1], int(sys.argv[2])
    total, count = defaultdict(float), defaultdict(int)
    for row in rows(path):
        name = row["Kernel Name"][:60]
        # One metric column per kernel (--page raw), or one row per metric (the default page).
        if "Metric Name" in row:
            if row["Metric Name"] != "gpu__time_duration.sum":
                continue
            value = row["Metric Value"]
        else:
            value = row.get("gpu__time_duration.sum", "")
        try:
            ns = float(value.replace(",", ""))
        except ValueError:
            continue
        total[name] += ns
        count[name] += 1
    per_step = {n: total[n] / steps / 1e3 for n in total if count[n] >= steps}
    step_us = sum(per_step.values())
    print(f"GPU time per step (sum of kernels): {step_us:.1f} us over {steps} steps")
    print(f"{'kernel':<60} {'launches/step':>13} {'us/step':>9} {'share':>6}")
    for n in sorted(per_step, key=per_step.get, reverse=True):
        print(f"{n:<60} {count[n] / steps:>13.1f} {per_step[n]:>9.1f} {per_step[n] / step_us:>6.1%}")
    rare = [n for n in total if count[n] < steps]
    if rare:
        print("fewer than one launch a step (set-up):", ", ".join(sorted(rare)))


if __name__ == "__main__":
    main()
