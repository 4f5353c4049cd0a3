"""Wall time, CPU time and peak memory of one process, shared by the benchmark scripts."""
import os
import subprocess
import sys


def measure_cpu(name, cmd, env=None):
    """Runs `cmd` under GNU time; returns (wall seconds, peak RSS MiB, CPU seconds), or exits with its output if
    it fails."""
    proc = subprocess.run(["/usr/bin/time", "-f", "%e %M %U %S", *cmd], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"{name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    wall, rss_kb, user, system = proc.stderr.strip().splitlines()[-1].split()
    return float(wall), int(rss_kb) / 1024, float(user) + float(system)


def measure(name, cmd, env=None):
    """Runs `cmd` under GNU time; returns (wall seconds, peak RSS MiB), or exits with its output if it fails."""
    wall, rss, _ = measure_cpu(name, cmd, env)
    return wall, rss


def cpu_seconds(pid):
    """CPU seconds (user + system) process `pid` has used so far, for servers a benchmark starts."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
