"""Summarize a py-spy ``--format raw`` profile: ``python -m bench.profile_summary FILE [N]``.

FILE may be gzipped (the profiles kept in bench/profiles/ are).

Prints, per process, the share of samples, then the top N functions by inclusive share
(a function counted once per stack) and by self share (the innermost frame).
"""

from __future__ import annotations

import gzip
import re
import sys
from collections import Counter, defaultdict

_LINE = re.compile(r"^(.*) (\d+)$")
_FRAME = re.compile(r"^(.*?) \((.*?)(?::\d+)?\)$")


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    func, path = match.groups()
    for marker in ("site-packages/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{func} ({path})"


def summarize(path: str, top: int = 25) -> str:
    per_process: Counter[str] = Counter()
    inclusive: dict[str, Counter[str]] = defaultdict(Counter)
    self_time: dict[str, Counter[str]] = defaultdict(Counter)
    total = 0
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as handle:
        for line in handle:
            match = _LINE.match(line.rstrip("\n"))
            if not match:
                continue
            stack, count = match.group(1).split(";"), int(match.group(2))
            # With --subprocesses a child's stack starts with its parent's "process" frame.
            cut = max(i for i, f in enumerate(stack) if f.startswith("process ") or i == 0)
            process = stack[cut] if stack[cut].startswith("process ") else "?"
            pid = process.split(":", 1)[0]
            role = "main" if cut == 0 else "child"
            process = f"{pid} ({role})"
            frames = [_short(f) for f in stack[cut + 1 :] if not f.startswith("thread ")]
            total += count
            per_process[process] += count
            for frame in set(frames):
                inclusive[process][frame] += count
            if frames:
                self_time[process][frames[-1]] += count
    lines = [f"{path}: {total} samples"]
    for process, count in per_process.most_common():
        lines.append(f"\n== {process}: {count} samples ({100 * count / total:.1f} %)")
        lines.append("  inclusive:")
        for frame, n in inclusive[process].most_common(top):
            lines.append(f"    {100 * n / count:5.1f} %  {frame}")
        lines.append("  self:")
        for frame, n in self_time[process].most_common(top // 2):
            lines.append(f"    {100 * n / count:5.1f} %  {frame}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(__doc__)
        return 2
    print(summarize(args[0], int(args[1]) if len(args) > 1 else 25))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
