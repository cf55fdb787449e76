"""Error types of :mod:`saip_fl`: one base class, a few specific failures."""

from __future__ import annotations


class FLError(Exception):
    """Base class of every error raised by :mod:`saip_fl`."""


class FLConfigError(FLError, ValueError):
    """The run configuration is unsafe or inconsistent; the message names the setting."""


class ProtocolHaltedError(FLError):
    """A round produced no aggregate (e.g. SecAgg+ halted) so the global model did not change."""


class UpdateRejectedError(FLError):
    """A client refused to send an update that breaks a client-side check (norm, range)."""


class PrivacyGuaranteeError(FLConfigError):
    """The differential-privacy settings cannot give a meaningful (ε, δ) guarantee."""


class RunDegradedError(FLError):
    """The run finished but too many rounds were rolled back: its model is not trustworthy."""


class RunInterruptedError(FLError):
    """The run was stopped (Ctrl-C / SIGTERM); ``metrics.json`` says ``interrupted``."""
