"""The errors a user can fix. Each message is one line that says what was wrong and how to fix it;
the command line prints it and exits with code 2 (``cli.main`` catches KerasCifarError once)."""


class KerasCifarError(Exception):
    """Base class: bad input, not a bug."""


class ConfigError(KerasCifarError):
    """A recipe, override or option that cannot be used; names the file and key, says what is allowed."""


class BackendError(KerasCifarError):
    """A Keras backend that is unknown, not installed, or cannot run the requested settings."""


class DataError(KerasCifarError):
    """Data that cannot be found or read; names the path and the accepted formats."""


class RunFolderError(KerasCifarError):
    """A run folder (or a folder of runs) that cannot be used for what was asked."""


class OtherConfigError(RunFolderError):
    """A run folder that holds a run of another config: the command needs another --out."""


class ModelError(KerasCifarError):
    """A model file or export folder that cannot be loaded or written."""


class WriteError(KerasCifarError):
    """A file that cannot be written (disk full, no permission, read-only); names the folder and the file."""
