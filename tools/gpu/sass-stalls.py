#!/usr/bin/env python3
"""Summarise Nsight Compute's source page (tools/gpu/ncu-source.sh's src-KERNEL.csv): instructions executed and stall
samples in all, the stall reasons with the opcodes they fall on, and the instructions with the most samples.
Usage: python3 tools/gpu/sass-stalls.py src-KERNEL.csv [top N]"""
import collections
import csv
import sys

lines = open(sys.argv[1]).read().splitlines()
top = int(sys.argv[2]) if len(sys.argv) > 2 else 20
start = next((i for i, l in enumerate(lines) if l.startswith('"Address"')), None)
if start is None:
    sys.exit(f"{sys.argv[1]}: no source page (no line starting with \"Address\")")
rows = list(csv.reader(lines[start:]))
head, rows = rows[0], [r for r in rows[1:] if len(r) == len(rows[0])]
src, samples, executed = head.index("Source"), head.index("Warp Stall Sampling (All Samples)"), head.index("Instructions Executed")
reasons = [h for h in head if h.startswith("stall_") and "Not Issued" not in h]
num = lambda r, i: int(r[i] or 0)
print(f"instructions executed {sum(num(r, executed) for r in rows)}, stall samples {sum(num(r, samples) for r in rows)}")
total, by_op = collections.Counter(), collections.defaultdict(collections.Counter)
for r in rows:
    words = [w for w in r[src].split() if not w.startswith("@")]
    op = words[0].split(".")[0] if words else "?"
    for x in reasons:
        v = num(r, head.index(x))
        total[x] += v
        by_op[x][op] += v
for x, v in total.most_common(8):
    print(f"{x:22} {v:6}  " + ", ".join(f"{o} {n}" for o, n in by_op[x].most_common(5)))
print(f"\ntop {top} instructions by samples (row, executed, samples, SASS):")
for i, r in sorted(enumerate(rows), key=lambda p: -num(p[1], samples))[:top]:
    print(f"{i:5} {num(r, executed):9} {num(r, samples):6}  {r[src].strip()}")
