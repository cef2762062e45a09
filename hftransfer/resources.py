"""What this process uses of the machine: its peak memory (reported per run) and its share of
the CPU cores (torch threads)."""
from __future__ import annotations

import os
import resource
import sys

import torch


def reset_peak_rss() -> None:
    """Start the peak-memory count again (Linux), so that runs one after another in one process
    (``compare``) each report their own peak, not the largest of all before them."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # 5: reset the resident-set high-water mark
    except OSError:
        pass  # not Linux, or not allowed: the peak then counts from the start of the process


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB since :func:`reset_peak_rss` (else since it
    started)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux reports KiB, macOS bytes
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


# torch's own default (one thread per physical core), read before anyone changes it.
_CORES = torch.get_num_threads()


def share_cpu_cores() -> int:
    """Set and return this process's torch threads. ``OMP_NUM_THREADS``, when set (by the user,
    or by a launcher that split the cores already), decides; otherwise the processes launched on
    this machine (``LOCAL_WORLD_SIZE``) share its physical cores instead of each taking all of
    them: two processes with two threads each on two cores run several times slower."""
    if os.environ.get("OMP_NUM_THREADS", "").strip():
        return torch.get_num_threads()  # torch read it at start-up
    local = os.environ.get("LOCAL_WORLD_SIZE", "").strip()
    processes = int(local) if local.isdigit() and int(local) > 0 else 1
    if processes > 1 and not torch.cuda.is_available():
        torch.set_num_threads(max(1, _CORES // processes))
    return torch.get_num_threads()
