"""Shared helpers for the benchmarks: one subprocess per case, peak memory from ru_maxrss, and
the unfold baseline of the LSA aggregation (:func:`lsa_aggregate_unfold_baseline`).

Why a subprocess per case: the peak resident set size (``ru_maxrss``) is a process-wide
high-water mark that never goes down, so each case runs in a fresh interpreter. A case reports
*extra* peak memory: ``ru_maxrss`` at the end minus the resident size measured just before the
first timed call (inputs, model and imported libraries already resident). This counts every
temporary the operation allocates (PyTorch's CPU allocator returns large blocks to the OS, so
nothing is hidden in a cache) and is the number that decides whether a run fits in memory.
On CUDA the same role is played by ``torch.cuda.max_memory_allocated`` after
``reset_peak_memory_stats``.
"""
import json
import os
import platform
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

__all__ = ["rss_mb", "peak_rss_mb", "minor_faults", "time_call", "run_case", "interleaved",
           "ratio_cells", "machine_line", "format_table", "measure", "KEEP_FREED_MEMORY",
           "lsa_aggregate_unfold_baseline"]


def rss_mb():
    """Current resident set size of this process, in MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb():
    """Peak resident set size of this process so far, in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_call(fn, repeat, device, warmup=True):
    """Run ``fn`` ``repeat`` times after one warm-up call (unless ``warmup`` is False); return
    the median seconds."""

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    if warmup:
        fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def run_case(module, args, env=None):
    """Run ``python -m <module> --case <json>`` in a fresh process; return its JSON result line."""
    cmd = [sys.executable, "-m", module, "--case", json.dumps(args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        if proc.returncode in (-9, 137):
            return {"error": "killed (out of memory?)"}
        errors = [ln for ln in proc.stderr.splitlines() if "Error" in ln or "error" in ln]
        return {"error": (errors or proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(lines[-1])


def interleaved(module, cases, rounds):
    """Run ``[(label, case, env)]`` of ``module`` round-robin ``rounds`` times, each in its own
    process; return ``[(label, result)]``: each case's fastest round, with ``result["rounds"]``
    its seconds in every round (None where it failed). Round-robin, so that a load change on a
    shared machine lands on every case of a round, not on one case."""
    runs = {label: [] for label, _, _ in cases}
    for round_ in range(rounds):
        for label, case, env in cases:
            r = run_case(module, case, env)
            runs[label].append(r)
            took = f"{r['seconds']:.3f} s" if "error" not in r else r["error"]
            print(f"  round {round_ + 1}/{rounds}  {label}: {took}", file=sys.stderr, flush=True)
    rows = []
    for label, _, _ in cases:
        good = [r for r in runs[label] if "error" not in r]
        best = min(good, key=lambda r: r["seconds"]) if good else runs[label][-1]
        rows.append((label, {**best, "rounds": [r.get("seconds") for r in runs[label]]}))
    return rows


def ratio_cells(result, ref):
    """``(ratio of the fastest rounds, "lo-hi" range of the per-round ratios)`` of ``result``
    against ``ref`` (rows of :func:`interleaved`)."""
    per_round = [a / b for a, b in zip(result["rounds"], ref["rounds"]) if a and b]
    spread = f"{min(per_round):.2f}-{max(per_round):.2f}x" if per_round else ""
    return f"{result['seconds'] / ref['seconds']:.2f}x", spread


def machine_line(device):
    """One line naming the machine and its load, printed above every table."""
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, " \
                f"{torch.get_num_threads()} torch threads"
    try:
        load = "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        load = "load unknown"
    return f"{where}; torch {torch.__version__}; {load}"


def format_table(headers, rows):
    """A GitHub-markdown table."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep] + [line(r) for r in rows])


def minor_faults():
    """Page faults served without I/O so far in this process (first touches of fresh pages)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


# glibc malloc settings that keep freed memory in the process: no allocation is served by a
# fresh mmap and the heap is never trimmed, so after the warm-up no call touches fresh pages.
# (By default glibc mmaps every block above a threshold that adapts up to 32 MiB, and unmaps
# it on free: each such tensor costs one page fault per 4 KiB page, every time.)
KEEP_FREED_MEMORY = {"MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**36)}


def measure(step, device, repeat):
    """Median seconds of ``repeat`` calls of ``step``, the extra peak memory (MiB) they need
    (CUDA's peak allocation, or on CPU the peak RSS above the RSS before the first call) and
    the minor page faults per timed call (the warm-up call's are not counted)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = rss_mb()
    step()  # warm-up
    faults = minor_faults()
    seconds = time_call(step, repeat, device, warmup=False)
    faults = (minor_faults() - faults) / repeat
    if device.type == "cuda":
        extra = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        extra = peak_rss_mb() - base
    return {"seconds": seconds, "extra_mb": extra, "faults": faults}


def lsa_aggregate_unfold_baseline(x, kernels, kernel_size, stride=1):
    """The LSA aggregation (Eq. 5) as the official involution code and other projects write it,
    with ``unfold``: the baseline the benchmarks compare against. It materializes the
    (B, C, K^2, H', W') patches (49x the input for K = 7); the library's PyTorch form is
    :func:`dcdc.layers.ops.lsa_aggregate_composite`."""
    from dcdc.layers.ops import check_aggregate_inputs

    groups, out_h, out_w = check_aggregate_inputs(x, kernels, kernel_size, stride)
    batch, channels = x.shape[:2]
    pad = (kernel_size - 1) // 2
    patches = F.unfold(x, kernel_size, padding=pad, stride=stride).view(
        batch, groups, channels // groups, kernel_size * kernel_size, out_h, out_w
    )
    return (kernels.unsqueeze(2) * patches).sum(dim=3).view(batch, channels, out_h, out_w)
