"""Reads callgrind output files: self cost per (function, source file) and the call graph.

Self cost is kept per source file as well as per function because fat LTO inlines most of the
code of one admission into a few large functions; the line tables (a build with
`debug = "line-tables-only"`) still name the source file of every inlined instruction, which is
what callgrind writes as `fi=`/`fe=`.

Format: https://valgrind.org/docs/manual/cl-format.html (name compression `(id) name`,
relative positions, `calls=` followed by the inclusive cost line of that call).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

_NAME = re.compile(r"^\((\d+)\)(?: (.*))?$")


@dataclass
class Profile:
    total: int = 0
    # (function, file) -> self instructions
    self_cost: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    # (caller, callee) -> inclusive instructions of the calls
    calls: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))

    def fn_self(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for (fn, _), n in self.self_cost.items():
            out[fn] += n
        return out

    def minus(self, other: Profile) -> Profile:
        """self − other, entry by entry (the steady-state difference of two runs)."""
        d = Profile(total=self.total - other.total)
        for k in set(self.self_cost) | set(other.self_cost):
            v = self.self_cost.get(k, 0) - other.self_cost.get(k, 0)
            if v:
                d.self_cost[k] = v
        for k in set(self.calls) | set(other.calls):
            v = self.calls.get(k, 0) - other.calls.get(k, 0)
            if v:
                d.calls[k] = v
        return d


def read(path: Path) -> Profile:
    p = Profile()
    names: dict[str, dict[str, str]] = {k: {} for k in ("fl", "fn", "ob")}

    def name(kind: str, value: str) -> str:
        # fi/fe/cfi/cfl share the file table with fl; cfn with fn; cob with ob.
        table = names[{"fi": "fl", "fe": "fl", "cfi": "fl", "cfl": "fl", "cfn": "fn", "cob": "ob"}.get(kind, kind)]
        m = _NAME.match(value)
        if not m:
            return value
        ident, text = m.group(1), m.group(2)
        if text is not None:
            table[ident] = text
        return table.get(ident, f"({ident})")

    fl = fi = fn = "???"
    cfn: str | None = None
    pending_call = False
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                parts = line.split()
                if len(parts) < 2:
                    continue
                cost = int(parts[1])
                if pending_call:
                    p.calls[(fn, cfn or "???")] += cost
                    pending_call = False
                else:
                    p.self_cost[(fn, fi)] += cost
                continue
            key, _, value = line.partition("=")
            if key == "fl":
                fl = fi = name("fl", value)
            elif key in ("fi", "fe"):
                fi = name(key, value)
            elif key == "fn":
                fn = name("fn", value)
                fi = fl
            elif key in ("cfi", "cfl"):
                name(key, value)
            elif key == "cfn":
                cfn = name("cfn", value)
            elif key == "cob" or key == "ob":
                name(key, value)
            elif key == "calls":
                pending_call = True
            elif line.startswith("summary:") or line.startswith("totals:"):
                p.total = int(line.split(":", 1)[1].split()[0])
    return p
