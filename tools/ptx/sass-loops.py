#!/usr/bin/env python3
"""The loops of a kernel's SASS (nvdisasm -c output), each with its instructions counted by opcode.

A loop is a backward branch: its body runs from the branch target to the branch. ptxas places a loop's body
contiguously, so the static count of a loop's instructions is what a warp issues an iteration when no branch
inside it is taken (branches inside are listed, so taken paths can be read off). This is the offline half of
"issue-bound" (bench/NOTES.md): how many instructions a warp spends an iteration, before any GPU run.

usage: sass-loops.py FILE.sass [--min N]   (loops of at least N instructions, default 20)
"""
import re
import sys
from collections import Counter

INSN = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?);")
LABEL = re.compile(r"^\s*(\.L_x_\d+):")
TARGET = re.compile(r"`\((\.L_x_\d+)\)")


def parse(path):
    insns, labels, pending = [], {}, []
    for line in open(path):
        m = LABEL.match(line)
        if m:
            pending.append(m.group(1))
            continue
        m = INSN.search(line)
        if not m:
            continue
        addr, text = int(m.group(1), 16), m.group(2).strip()
        for name in pending:
            labels[name] = addr
        pending = []
        insns.append((addr, text))
    return insns, labels


def opcode(text):
    t = re.sub(r"^@!?U?P[T0-9]+\s+", "", text)
    return t.split()[0] if t else "?"


def main():
    args = sys.argv[1:]
    least = 20
    if "--min" in args:
        i = args.index("--min")
        least = int(args[i + 1])
        del args[i:i + 2]
    if len(args) != 1:
        sys.exit(__doc__)
    insns, labels = parse(args[0])
    index = {a: i for i, (a, _) in enumerate(insns)}
    loops = []
    for i, (addr, text) in enumerate(insns):
        m = TARGET.search(text)
        if "BRA" in text and m and m.group(1) in labels and labels[m.group(1)] <= addr:
            loops.append((index[labels[m.group(1)]], i))
    print(f"{args[0]}: {len(insns)} instructions, {len(loops)} loop(s)")
    for start, end in loops:
        body = [opcode(t) for _, t in insns[start:end + 1]]
        if len(body) < least:
            continue
        counts = Counter(o.split(".")[0] for o in body)
        inner = sum(1 for s, e in loops if (s, e) != (start, end) and start <= s and e <= end)
        top = ", ".join(f"{k} {v}" for k, v in counts.most_common(14))
        print(f"  loop {insns[start][0]:#06x}-{insns[end][0]:#06x}: {len(body)} instructions"
              f"{f', {inner} inner loop(s)' if inner else ''}\n    {top}")


if __name__ == "__main__":
    main()
