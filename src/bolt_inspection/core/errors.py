"""The project's error types.

Every error a user can cause (bad input, bad configuration, a missing file) is raised as a
:class:`BoltInspectionError` whose message is one self-explanatory line. The CLI prints it as
``error: <message>`` and exits non-zero; nodes log it and turn it into an NG verdict or a
lifecycle FAILURE. Programming errors stay ordinary exceptions with tracebacks.
"""


class BoltInspectionError(Exception):
    """Base class: a failure the user can fix, explained in one line."""


class ConfigError(BoltInspectionError):
    """A configuration file or parameter is missing, malformed or out of range."""


class DatasetError(BoltInspectionError):
    """A dataset folder is missing, empty, or holds unreadable or inconsistent images."""


class ImageError(BoltInspectionError):
    """An image cannot be decoded or has the wrong size, channels or encoding."""


class ModelError(BoltInspectionError):
    """A model artifact is missing, corrupt or does not match what it is used with."""


class PlcError(BoltInspectionError):
    """The PLC could not be reached or answered with a Modbus exception."""


class OutputError(BoltInspectionError):
    """An output file or folder cannot be written (checked before the work starts)."""
