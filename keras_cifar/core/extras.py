"""The optional dependencies (pyproject.toml's extras), checked before anything is imported: a missing one
is one line that names the extra to install."""

import importlib.util

from keras_cifar.core.errors import ConfigError


def require(extra: str, *modules: str, purpose: str) -> None:
    """Raise a ConfigError naming `extra` if any of `modules` cannot be imported; `purpose` says what
    needs them ("--track mlflow", "--format onnx")."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f'{purpose} needs {", ".join(missing)}, not installed: pip install "keras-cifar[{extra}]" '
            f'(in a checkout: pip install -e ".[{extra}]")'
        )
