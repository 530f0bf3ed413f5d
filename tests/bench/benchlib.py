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


def rss_anon_kib(pid):
    """RssAnon of pid in KiB (/proc/PID/status); 0 when the process is gone."""
    try:
        with open("/proc/%d/status" % pid) as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def write_bytes(pid):
    """write_bytes of /proc/PID/io: the bytes pid has sent to the storage layer; 0 when gone."""
    try:
        with open("/proc/%d/io" % pid) as io:
            for line in io:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def open_fds(pid):
    """How many descriptors pid holds (ls /proc/PID/fd | wc -l); 0 when it is gone."""
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return 0


def worker_pids(pid):
    """The pids of pid's children (a pycached's compiler workers), from /proc."""
    children = []
    try:
        for task in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, task)) as f:
                children.extend(int(p) for p in f.read().split())
    except OSError:
        pass
    return sorted(set(children))
