"""Child processes: their own session, ended with their parent, stopped with all they started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from common.localstack.processes import describe_exit, spawn, stop_all
from tests.toolkit import is_running, wait_until

# A child that notes a SIGTERM in its log before it exits, and otherwise waits.
_NOTES_SIGTERM = textwrap.dedent(
    """
    import signal, sys, time
    def stop(signum, frame):
        print("got", signal.Signals(signum).name, flush=True)
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    print("ready", flush=True)
    time.sleep(60)
    """
)


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _wait_for_line(log: Path, line: str) -> None:
    wait_until(
        lambda: line in log.read_text().splitlines(),
        timeout=20,
        what=f"{line!r} in {log.name}",
        details=log.read_text,
    )


class TestSpawn:
    def test_own_session_and_output_appended_to_the_log(self, tmp_path: Path) -> None:
        log = tmp_path / "child.log"
        log.write_text("earlier\n")
        proc = spawn(_python("print('hello')"), log=log)
        assert proc.wait(20) == 0
        assert log.read_text() == "earlier\nhello\n"

        proc = spawn(_python(_NOTES_SIGTERM), log=log)
        try:
            _wait_for_line(log, "ready")
            assert os.getsid(proc.pid) == proc.pid
            assert os.getpgid(proc.pid) == proc.pid
        finally:
            stop_all([proc])

    def test_child_is_stopped_when_its_parent_is_killed(self, tmp_path: Path) -> None:
        log = tmp_path / "child.log"
        parent_code = textwrap.dedent(
            f"""
            import sys, time
            from pathlib import Path
            from common.localstack.processes import spawn
            child = spawn([sys.executable, "-c", {_NOTES_SIGTERM!r}], log=Path({str(log)!r}))
            print(child.pid, flush=True)
            time.sleep(60)
            """
        )
        parent = subprocess.Popen(_python(parent_code), stdout=subprocess.PIPE, text=True)
        try:
            assert parent.stdout is not None
            child = int(parent.stdout.readline())
            _wait_for_line(log, "ready")
            parent.kill()
            parent.wait()
            _wait_for_line(log, "got SIGTERM")
            wait_until(lambda: not is_running(child), timeout=20, what="the child gone")
        finally:
            if parent.poll() is None:
                parent.kill()
                parent.wait()


class TestStopAll:
    def test_stops_what_the_child_started(self, tmp_path: Path) -> None:
        log = tmp_path / "child.log"
        starts_another = textwrap.dedent(
            f"""
            import subprocess, sys, time
            grandchild = subprocess.Popen([sys.executable, "-c", {_NOTES_SIGTERM!r}])
            print("grandchild", grandchild.pid, flush=True)
            time.sleep(60)
            """
        )
        proc = spawn(_python(starts_another), log=log)
        _wait_for_line(log, "ready")
        grandchild = int(log.read_text().split("grandchild ")[1].split()[0])

        stop_all([proc])
        assert proc.returncode == -signal.SIGTERM
        # Signalled with its parent's group, then swept once the parent is gone.
        wait_until(lambda: not is_running(grandchild), timeout=20, what="the grandchild gone")

    def test_sigkill_after_the_timeout(self, tmp_path: Path) -> None:
        log = tmp_path / "child.log"
        ignores_sigterm = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        proc = spawn(
            _python(ignores_sigterm + "print('ready', flush=True)\ntime.sleep(60)"), log=log
        )
        _wait_for_line(log, "ready")

        stop_all([proc], timeout=0.5)
        assert proc.returncode == -signal.SIGKILL

    def test_exited_process_is_left_as_it_was(self, tmp_path: Path) -> None:
        proc = spawn(_python("raise SystemExit(3)"))
        assert proc.wait(20) == 3
        stop_all([proc])
        assert proc.returncode == 3


class TestDescribeExit:
    def test_exit_code(self) -> None:
        assert describe_exit(0) == "exited with code 0"
        assert describe_exit(3) == "exited with code 3"

    def test_signal(self) -> None:
        assert describe_exit(-signal.SIGKILL) == "was killed by SIGKILL"
        assert describe_exit(-signal.SIGTERM) == "was killed by SIGTERM"
