"""Wall time and peak memory of one process, shared by the benchmark scripts."""
import subprocess
import sys


def measure(name, cmd, env=None):
    """Runs `cmd` under GNU time; returns (wall seconds, peak RSS MiB), or exits with its output if it fails."""
    proc = subprocess.run(["/usr/bin/time", "-f", "%e %M", *cmd], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"{name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    wall, rss_kb = proc.stderr.strip().splitlines()[-1].split()
    return float(wall), int(rss_kb) / 1024
