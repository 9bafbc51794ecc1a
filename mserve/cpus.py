"""How many CPUs this process may really use: its affinity, capped by a cgroup CPU quota (a
container's limit). onnxruntime starts as many threads as the machine has cores, so a pod limited
to one CPU on a 64-core node would run 64 threads and be throttled."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
DEVICES = Path("/sys/devices/system/cpu")


def usable_cpus(cgroup: Path = CGROUP, devices: Path = DEVICES) -> tuple[int, str]:
    """The cores this process may use, and how that was found (for the log and status): the
    physical cores of the CPUs in its affinity mask (onnxruntime's own default counts physical
    cores: a second hardware thread of a core adds little to its arithmetic), capped by a
    cgroup CPU quota."""
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        affinity = list(range(os.cpu_count() or 1))
    cores = physical_cores(affinity, devices)
    how = f"{cores} cores in the affinity mask" + (
        f" ({len(affinity)} hardware threads)" if cores != len(affinity) else ""
    )
    quota = cgroup_quota(cgroup)
    if quota is not None and quota < cores:
        return max(1, math.ceil(quota)), f"a cgroup quota of {quota:g} CPUs; {how}"
    return cores, how + ("" if quota is None else f", under a cgroup quota of {quota:g}")


def physical_cores(cpus: list[int], devices: Path = DEVICES) -> int:
    """How many distinct cores CPUS (logical CPU numbers) sit on; each CPU its own core when
    the topology cannot be read."""
    cores = set()
    for cpu in cpus:
        topology = devices / f"cpu{cpu}" / "topology"
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            return len(cpus)
        cores.add((package, core))
    return max(1, len(cores))


def cgroup_quota(
    cgroup: Path = CGROUP, membership: Path = Path("/proc/self/cgroup")
) -> float | None:
    """The tightest CPU quota, in CPUs, on this process's cgroup and its parents (cgroup v2's
    ``cpu.max``, else v1's ``cpu.cfs_quota_us``); None when there is none."""
    quotas = []
    for folder in _own_cgroups(cgroup, membership):
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            if quota != "max":
                quotas.append(int(quota) / int(period))
        except (OSError, ValueError):
            continue
    if quotas:
        return min(quotas)
    try:
        quota_us = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us


def _own_cgroups(cgroup: Path, membership: Path) -> list[Path]:
    """This process's cgroup v2 folder and every parent up to the root (in a container's
    cgroup namespace: just the root)."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return [cgroup]
    relative = next((line[3:] for line in lines if line.startswith("0::")), "/")
    folder = cgroup / relative.strip("/")
    folders = [folder, *folder.parents]
    return [f for f in folders if f == cgroup or f.is_relative_to(cgroup)]
