"""Summarise a py-spy "raw" (collapsed stacks) profile, such as bench/run.py --profile writes.

    .venv/bin/python bench/profile_summary.py bench/out/profile-small-c1.txt [--top 30]
    .venv/bin/python bench/profile_summary.py PROFILE --grep pixelgate   # only frames matching

Prints the share of samples per thread, the functions with the most samples on top of the
stack (self), and the functions with the most samples anywhere in the stack (inclusive).
"""

from __future__ import annotations

import argparse
import collections
import re
import sys


def frame_name(frame: str) -> str:
    # py-spy frames look like "function (path/to/file.py:123)"; drop the line number
    m = re.match(r"^(.*) \((.*?)(?::\d+)?\)$", frame)
    if not m:
        return frame
    func, path = m.groups()
    for marker in ("site-packages/", "lib/python3.", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker.startswith("lib/python3."):
                path = "stdlib:" + path.split("/", 1)[-1]
            break
    return f"{func} ({path})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--grep", help="only count frames whose name contains this text")
    args = parser.parse_args(argv)

    self_count: collections.Counter[str] = collections.Counter()
    incl_count: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    with open(args.profile) as fh:
        for line in fh:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, count_text = line.rpartition(" ")
            try:
                count = int(count_text)
            except ValueError:
                continue
            frames = stack.split(";")
            total += count
            if frames and frames[0].startswith(("thread", "process")):
                threads[frames[0]] += count
                frames = frames[1:]
            if frames and frames[0].startswith("thread"):
                threads[frames[0]] += count
                frames = frames[1:]
            names = [frame_name(f) for f in frames]
            if args.grep:
                names = [n for n in names if args.grep in n]
            if not names:
                continue
            self_count[names[-1]] += count
            for name in set(names):
                incl_count[name] += count
    if not total:
        print("no samples")
        return 1
    print(f"{total} samples")
    if threads:
        print("\nthreads:")
        for name, c in threads.most_common(8):
            print(f"  {100 * c / total:5.1f}%  {name}")
    print("\nself (on top of the stack):")
    for name, c in self_count.most_common(args.top):
        print(f"  {100 * c / total:5.1f}%  {name}")
    print("\ninclusive (anywhere in the stack):")
    for name, c in incl_count.most_common(args.top):
        print(f"  {100 * c / total:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
