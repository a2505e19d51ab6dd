"""The exit codes of every ``provision`` command: one table, used by the CLI, its help and the tests.

====  ==========================================================================
0     success; nothing failed (``plan --detailed-exitcode``: no changes)
1     a resource or a check failed: a download, a deployment, a verification, a smoke
      test, a preflight or fit check, ``--locked`` refusing a lock change
2     bad input or usage: an invalid manifest, an unknown option or name, options that
      contradict each other, a confirmation that cannot be asked
      (``plan --detailed-exitcode``: changes pending; every error is then 1)
130   interrupted by SIGINT (Ctrl-C); run the command again to resume
143   terminated by SIGTERM; run the command again to resume
====  ==========================================================================
"""

from __future__ import annotations

import signal

OK = 0
FAILED = 1
USAGE = 2
INTERRUPTED = 128 + signal.SIGINT  # 130, as shells report a process killed by SIGINT
TERMINATED = 128 + signal.SIGTERM  # 143

# code -> meaning, in the words the help and the README print
TABLE: dict[int, str] = {
    OK: "success",
    FAILED: "a resource or a check failed (download, deploy, verify, smoke, fit)",
    USAGE: "bad input or usage (invalid manifest, unknown option or name)",
    INTERRUPTED: "interrupted (SIGINT, Ctrl-C); run it again to resume",
    TERMINATED: "terminated (SIGTERM); run it again to resume",
}


def for_signal(signum: int) -> int:
    """The exit code for a run stopped by ``signum`` (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + signum
