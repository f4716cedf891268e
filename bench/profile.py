"""`python -m bench.profile STACKS.txt [--top N] [--thread NAME]`: where a py-spy profile spent its time.

Reads py-spy's collapsed stacks (`--format raw`, as `bench.run --profile DIR` records them) and
prints, per function, the share of samples it was on the stack (inclusive) and on top (self).
Shares are of the samples of the selected threads; the event loop runs on the main thread, the
SQLite operations on threads of their own (onward-db-write, onward-db-read_N).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"(.*) \((.*?):\d+\)$")


def _name(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m.group(2)
    for cut in ("site-packages/", "src/", "lib/python3"):
        if cut in path:
            path = path.split(cut, 1)[1]
    return f"{m.group(1)} ({path})"


def summarize(path: Path, thread: str | None = None) -> tuple[int, Counter[str], Counter[str]]:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        label = frames[0] if frames[0].startswith("thread ") else ""
        if thread is not None and thread not in label:
            continue
        n = int(count)
        total += n
        names = [_name(f) for f in (frames[1:] if label else frames)] or [label]
        for name in set(names):
            inclusive[name] += n
        own[names[-1]] += n
    return total, inclusive, own


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("stacks", type=Path)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--thread", help="only stacks whose thread label contains this (e.g. MainThread)")
    args = parser.parse_args(argv)
    total, inclusive, own = summarize(args.stacks, args.thread)
    print(f"{total} samples")
    print("inclusive:")
    for name, n in inclusive.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {name}")
    print("self:")
    for name, n in own.most_common(args.top // 2):
        print(f"  {100 * n / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
