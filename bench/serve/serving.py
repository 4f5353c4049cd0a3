"""Starting and watching `weir serve` for the serving benchmarks (webhook_load.py, scheduler_scale.py)."""
import socket
import sys
import time
import urllib.request


def free_port():
    """A port of 127.0.0.1 nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(port, server, log=None):
    """Waits until `weir serve` answers on `port`; exits with its log if the process ends first."""
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/pipelines", timeout=30)
            return
        except OSError:
            if server.poll() is not None:
                if log:
                    log.seek(0)
                sys.exit(f"weir serve ended ({server.returncode}): {log.read() if log else ''}")
            time.sleep(0.1)


def peak_rss_mib(pid):
    """The process's peak resident memory so far, in MiB."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
