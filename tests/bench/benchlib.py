"""What the benchmarks under tests/bench/ share: starting and stopping a pycached on a free
loopback port, and reading its counters."""
import json
import os
import signal
import subprocess
import time
import urllib.request


def start_server(build, store, log, *args):
    """Starts build/server/pycached (2 workers, its store in `store`, stdout and stderr in
    log + ".out" / ".err") on a free port; returns (process, url). Stop it with stop()."""
    out_path = log + ".out"
    with open(out_path, "wb") as out, open(log + ".err", "ab") as err:
        proc = subprocess.Popen([os.path.join(build, "server", "pycached"), "--port", "0",
                                 "--store", store, "--workers", "2", *args],
                                stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        with open(out_path) as out:
            line = out.readline()
        if line.endswith("\n") and " listening on " in line:
            return proc, line.split(" listening on ")[1].split()[0]
        time.sleep(0.05)
    stop(proc)
    raise RuntimeError("pycached did not start: %r" % open(out_path).read())


def stop(proc, timeout=30):
    """SIGTERM, then SIGKILL if it has not ended within timeout seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def stats(url):
    """The server's /v1/stats."""
    with urllib.request.urlopen(url + "/v1/stats", timeout=10) as response:
        return json.load(response)
