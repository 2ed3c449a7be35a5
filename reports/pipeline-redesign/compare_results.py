"""Compare every metric, probe and difference row of the results under two directories, value by value:
``python compare_results.py BEFORE AFTER`` prints how many rows matched, how many values changed at all, the
largest relative change and every change above 1e-9 relative."""

import json
import math
import pathlib
import sys
before, after = map(pathlib.Path, sys.argv[1:3])
def rows(d):
    out = {}
    for mf in sorted(d.rglob("result.json")):
        data = json.loads(mf.read_text())
        rel = mf.parent.relative_to(d).as_posix()
        for r in data["metrics"]:
            out[(rel, "metric", r["task"], r["pooling"], int(r["layer"]), r["metric"])] = r
        for r in data["probes"]:
            out[(rel, "probe", r["task"], r["pooling"], int(r["layer"]), r["probe"] + ":" + r["metric"])] = r
    for mf in sorted(d.rglob("comparison.json")):
        data = json.loads(mf.read_text())
        rel = mf.parent.relative_to(d).as_posix()
        for r in data["differences"]:
            out[(rel, "diff", r["task"], r["pooling"], int(r["layer"]), r["name"])] = r
    return out
a, b = rows(before), rows(after)
print(f"rows: before {len(a)}, after {len(b)}; only before {len(set(a)-set(b))}, only after {len(set(b)-set(a))}")
for k in sorted(set(a) ^ set(b))[:10]:
    print("  unmatched:", k)
moved = []
for k in sorted(set(a) & set(b)):
    for f in ("value", "low", "high", "diff"):
        va, vb = a[k].get(f), b[k].get(f)
        if va is None or vb is None or (isinstance(va, float) and math.isnan(va) and math.isnan(vb)):
            continue
        if va != vb:
            moved.append((k, f, va, vb))
print(f"values compared: {len(set(a) & set(b))} rows; moved: {len(moved)}")
rel = [abs(vb - va) / max(abs(va), abs(vb), 1e-300) for (_, _, va, vb) in moved
       if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and not isinstance(va, bool)]
print(f"largest relative change: {max(rel) if rel else 0:.3g}; changes above 1e-9 relative: "
      f"{sum(r > 1e-9 for r in rel)}")
for m in [m for m, r in zip(moved, rel) if r > 1e-9][:20]:
    print("  large:", m)
