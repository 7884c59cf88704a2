#!/usr/bin/env python3
"""Turns `cargo bench --bench throughput` output (divan's tree) into the markdown table of
benches/README.md: per model, batch and threads, the median images/s of `forward`
(tract), `verdict`, `forward_backward` and `pgd_step`, and the cost of forward + backward relative to tract's forward.

    cargo bench --bench throughput 2>&1 | tee /tmp/throughput.txt
    python3 benches/divan_table.py < /tmp/throughput.txt
"""

import re
import sys

UNITS = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9}
FUNCS = ("forward", "verdict", "forward_backward", "pgd_step")


def parse(lines):
    """{(func, case): median items/s}. divan prints a case's times on one line and its
    throughput (fastest │ slowest │ median │ mean) on the next."""
    out, func, case = {}, None, None
    for line in lines:
        m = re.match(r"^[├╰]─ (\w+)\s", line)
        if m and m.group(1) in FUNCS:
            func = m.group(1)
            continue
        m = re.search(r'─ "?([\w.]+/b\d+/t\d+)"?\s', line)
        if m:
            case = m.group(1)
            continue
        if func and case and "item/s" in line:
            cols = re.findall(r"([\d.]+)\s*([KMG]?)item/s", line)
            if len(cols) >= 3:
                v, u = cols[2]  # fastest, slowest, median, mean
                out[(func, case)] = float(v) * UNITS[u]
            case = None
    return out


def main():
    r = parse(sys.stdin.read().splitlines())
    cases = list(dict.fromkeys(c for _, c in r))
    print("| model | batch | threads | tract forward img/s | verdict img/s | fwd+bwd img/s | PGD step img/s "
          "| fwd+bwd cost / forward cost |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for c in cases:
        model, b, t = c.split("/")
        f, v, g, p = (r.get((fn, c)) for fn in FUNCS)
        cell = lambda v: f"{v:,.0f}" if v is not None and v >= 100 else (f"{v:.1f}" if v is not None else "–")  # noqa: E731
        ratio = f"{f / g:.2f}×" if f and g else "–"
        print(f"| {model} | {b[1:]} | {t[1:]} | {cell(f)} | {cell(v)} | {cell(g)} | {cell(p)} | {ratio} |")


if __name__ == "__main__":
    main()
