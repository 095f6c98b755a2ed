"""Clear ImportErrors for the optional dependencies of d2ldw's framework modules."""
import importlib.util
import sys


def _is_installed(import_name):
    try:
        return importlib.util.find_spec(import_name) is not None
    except ValueError:  # already imported, or masked with sys.modules[name] = None
        return sys.modules.get(import_name) is not None


def require(import_name: str, pip_spec: str, module: str, extra: str) -> None:
    """Raise ImportError naming the pip package if ``import_name`` is not installed.

    ``pip_spec`` is the requirement the package is tested with, the range of its extra
    ``extra`` (a project keeps the version it has, if it is in the range)."""
    if not _is_installed(import_name):
        raise ImportError(
            f"{module} needs the Python package '{import_name}', which is not installed. "
            f"Install it with: pip install 'd2ldw[{extra}]'   (that is: {pip_spec})")
