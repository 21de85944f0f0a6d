"""Errors a user can act on, and the exit statuses of ``xgenmm-train``.

The CLI prints such an error as one line ``xgenmm-train: error: <what is wrong; what to do>`` and exits with
:data:`EXIT_ERROR`; ``--debug`` (or ``XGENMM_DEBUG=1``) shows the traceback instead. Anything else is a bug
and keeps its traceback (exit status 1).

Exit statuses: 0 done · 1 unexpected error (traceback) · 2 an error you can fix (config, data, model or
checkpoint files, a failed checkpoint write, a non-finite loss) · 75 (``EX_TEMPFAIL``) stopped by SIGTERM or
SIGUSR1 after writing a checkpoint: rerun with ``checkpoint.resume=auto`` to continue.
"""

from __future__ import annotations

EXIT_ERROR = 2
EXIT_PREEMPTED = 75


class TrainError(RuntimeError):
    """A problem with the run's inputs or files; the message names the file, what is wrong and what to do."""


class CheckpointError(TrainError):
    """A checkpoint that cannot be trusted (incomplete, damaged, or holding arbitrary pickled objects), or
    one that could not be written."""


class BadPreferenceRecord(TrainError, ValueError):
    """A preference (DPO) record that cannot be used: the message names the file, the record and the reason.
    DPO data is not skipped record by record (a pair with a missing half would bias the loss)."""


class NonFiniteLoss(FloatingPointError):
    """A NaN/inf loss with ``train.nan_policy=stop``, or non-finite weights before a checkpoint save; the message
    names the optimizer step."""


class Preempted(Exception):
    """SIGTERM/SIGUSR1 arrived: the trainer finished the step, wrote ``checkpoint`` and stopped."""

    def __init__(self, signal_name: str, step: int, checkpoint):
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint
        super().__init__(
            f"stopped by {signal_name} after optimizer step {step}; checkpoint {checkpoint} written; "
            "rerun the same command with checkpoint.resume=auto to continue"
        )


__all__ = ["EXIT_ERROR", "EXIT_PREEMPTED", "CheckpointError", "NonFiniteLoss", "Preempted", "TrainError"]
