"""Helpers the benchmarks share: CPU time and memory of processes read
from /proc, percentiles, and a flat perf profile."""
import os
import re
import shutil
import signal
import subprocess

TICK = os.sysconf("SC_CLK_TCK")


def tree(pid):
    """pid and every descendant of it, now."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open("/proc/%d/task/%d/children" % (p, p)) as f:
                todo += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def stat_sum(pids, *idx):
    """The sum over pids of /proc/PID/stat's fields idx (counted after
    the command's closing parenthesis: 0 is the state). A pid that is
    gone counts 0."""
    total = 0
    for p in pids:
        try:
            with open("/proc/%d/stat" % p) as f:
                s = f.read()
        except OSError:
            continue
        fields = s[s.rindex(")") + 2:].split()
        total += sum(int(fields[i]) for i in idx)
    return total


def cpu_seconds(pids):
    """utime + stime of pids (each one itself, not its children), in s."""
    return stat_sum(pids, 11, 12) / TICK


def page_faults(pids):
    """Page faults (minor and major) of pids so far, each itself."""
    return stat_sum(pids, 7, 9)


def machine_busy_seconds():
    """CPU time every process on the machine has used (all cores), in s:
    /proc/stat's first line less idle and iowait."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / TICK


class CpuMeter:
    """CPU time of named groups of processes over a window: groups maps a
    name to a function returning the pids of that group now."""

    def __init__(self, groups):
        self.groups = groups

    def sample(self):
        """{group: s}, and "machine": every process on the machine."""
        out = {n: cpu_seconds(f()) for n, f in self.groups.items()}
        out["machine"] = machine_busy_seconds()
        return out

    @staticmethod
    def diff(a, b):
        return {n: b[n] - a[n] for n in a}


def pss_kib(pid):
    """Proportional set size of pid in KiB (smaps_rollup), None if gone."""
    try:
        return rollup(pid).get("Pss")
    except OSError:
        return None


def anon_kib(pid):
    """Anonymous memory of pid in KiB (Pss_Anon of smaps_rollup: the heap,
    stacks and anonymous mappings; a process that was not forked from
    another without exec holds it alone), None if gone. Unlike Pss it
    does not move when other processes map the same libraries."""
    try:
        return rollup(pid).get("Pss_Anon")
    except OSError:
        return None


def rollup(pid):
    """Every field of smaps_rollup in KiB."""
    out = {}
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            m = re.match(r"(\w+):\s+(\d+) kB", line)
            if m:
                out[m.group(1)] = int(m.group(2))
    return out


def heap_kib(pid):
    """Size of the [heap] mapping of pid in KiB (brk heap), plus anonymous
    mappings' Rss (malloc's mmap arenas): the memory malloc holds."""
    heap = anon = 0
    cur = None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                parts = line.split()
                cur = parts[5] if len(parts) > 5 else ""
            elif line.startswith("Rss:"):
                kb = int(line.split()[1])
                if cur == "[heap]":
                    heap += kb
                elif cur == "":
                    anon += kb
    return heap + anon


def pct(v, p):
    v = sorted(v)
    if not v:
        return float("nan")
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


class Perf:
    """perf record -e cpu-clock of some pids, from start() to stop(); a
    flat profile (self time by symbol and by shared object) after."""

    def __init__(self, path, pids, freq=999):
        self.path, self.pids, self.freq = path, pids, freq
        self.proc = None
        self.error = None

    @staticmethod
    def available():
        """None when perf can record here, else why it cannot."""
        if not shutil.which("perf"):
            return "perf is not installed (Debian: linux-perf)"
        r = subprocess.run(["perf", "record", "-e", "cpu-clock", "-o", "/dev/null",
                            "--", "true"], capture_output=True, text=True)
        if r.returncode != 0:
            para = open("/proc/sys/kernel/perf_event_paranoid").read().strip()
            return "perf record refused (perf_event_paranoid = %s): %s" % (
                para, r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "")
        return None

    def start(self):
        self.proc = subprocess.Popen(
            ["perf", "record", "-e", "cpu-clock", "-F", str(self.freq), "-o", self.path,
             "-p", ",".join(str(p) for p in self.pids)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=60)
        if self.proc.returncode not in (0, -signal.SIGINT):
            self.error = err.decode(errors="replace")

    def top(self, sort, limit=25):
        """[(percent, name)] of self time, sort = "sym" or "dso"."""
        r = subprocess.run(["perf", "report", "-i", self.path, "--stdio", "--no-children",
                            "--sort", sort, "--percent-limit", "0.3"],
                           capture_output=True, text=True)
        rows = []
        for line in r.stdout.splitlines():
            m = re.match(r"\s*([\d.]+)%\s+(.*\S)", line)
            if m and not line.lstrip().startswith("#"):
                name = re.sub(r"^\[[.k]\]\s+", "", m.group(2).strip())
                rows.append((float(m.group(1)), name))
        return rows[:limit]
