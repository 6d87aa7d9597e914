"""torchrun (``torch.distributed.run``) with Tunery's exit codes: when the workers stopped on an error they already
explained in one line (exit code 2) or on Ctrl-C (130), torchrun's own failure report and traceback are left out
and that code is returned; any other failure gets torchrun's full report, as before.

Used by :func:`tunery.utils.handoff.hand_off`: ``python -m tunery.torchrun [torchrun options] -m tunery.launch ARGS``.
"""

from __future__ import annotations

import logging
import sys

EXPLAINED = (2, 130)  # TuneryError, TrainingInterrupted


class _ExplainedFailures(logging.Filter):
    """Drops the agent's "failed (exitcode: 2) ..." line: the worker printed the reason."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg.startswith("failed (exitcode") and record.args and record.args[0] in EXPLAINED)


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    logging.getLogger("torch.distributed.elastic.multiprocessing.api").addFilter(_ExplainedFailures())
    try:
        run(parse_args(sys.argv[1:] if argv is None else argv))
    except ChildFailedError as err:
        codes = {failure.exitcode for failure in err.failures.values()}
        if codes <= set(EXPLAINED):
            return max(codes)
        raise
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
