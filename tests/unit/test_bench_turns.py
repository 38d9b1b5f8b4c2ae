"""make bench's turns: a server's turn starts only once the one before it has finished its work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.bench.bench import settle, tree_cpu_s

# A child busy for 1.6 s of CPU, then idle until stopped (a child: settle watches the process tree).
# The test asks for 1.5 s: /proc's tick-sampled CPU times (what psutil reads) can fall short of
# process_time's by a tick, and once read 1.49 s for a child busy 1.5 s.
CHILD = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.6: pass\ntime.sleep(60)"
PARENT = f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {CHILD!r}])"


def test_settle_waits_until_the_process_tree_stops_using_the_cpu() -> None:
    proc = subprocess.Popen([sys.executable, "-c", PARENT], start_new_session=True)
    try:
        settle(proc.pid, most_s=30)
        assert tree_cpu_s(proc.pid) >= 1.5  # it returned only once the child's work was done
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
