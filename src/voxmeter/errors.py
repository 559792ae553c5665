"""The few errors voxmeter raises for user mistakes.

The CLI turns any VoxmeterError into one line on stderr and exit status 2; anything else is a
bug and keeps its traceback.
"""


class VoxmeterError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class AudioError(VoxmeterError):
    """An audio file is missing, empty, corrupt, or holds non-finite samples."""


class ModelError(VoxmeterError):
    """A model name is unknown, or its files are missing or corrupt."""


class SpecError(VoxmeterError):
    """A run specification, sweep file or command-line option is invalid."""


class DataError(VoxmeterError):
    """A data set or manifest is missing, empty or malformed."""


class StoreError(VoxmeterError):
    """The results store cannot be read or holds nothing to act on."""
