"""Known failures: exceptions whose message alone says what went wrong and where.

A `RecipeError` message names the file or cut and the problem in one line; the scripts print it as
`{script}: error: {message}` (exit status 1) and write it to the training log, without a traceback
(`--debug true` shows it). Any other exception is a bug and keeps its traceback.
"""
import logging
import re
import sys
from typing import Optional


class RecipeError(Exception):
    """Base class of the known failures (see the module docstring)."""


class CheckpointError(RecipeError, RuntimeError):
    """A checkpoint cannot be used: missing, unreadable (truncated, rejected pickle) or not
    matching the model."""


class ConfigError(RecipeError, ValueError):
    """An option or a configuration file (conf.yaml, LM text) cannot be used."""


class MissingFileError(RecipeError, FileNotFoundError):
    """A file the run needs does not exist (the message names it and what makes it)."""


class CheckpointWriteError(RecipeError, OSError):
    """A checkpoint could not be written (disk full, permissions, ...); the old file is kept."""


class DataError(RecipeError, RuntimeError):
    """Training data cannot be used: too many unreadable cuts, ..."""


def _known_classes() -> set:
    todo, names = [RecipeError], set()
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


def known_error_message(exc: BaseException) -> Optional[str]:
    """The one-line message of a known failure, else None (a bug).

    Handles a `RecipeError`, and a `torch.multiprocessing.ProcessRaisedException` whose child
    traceback ends in a `RecipeError` subclass (its last line `module.Class: message`).
    """
    if isinstance(exc, RecipeError):
        return str(exc)
    if type(exc).__name__ == "ProcessRaisedException":
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        m = re.match(r"^(?:[\w.]+\.)?(\w+): (.*)$", last)
        if m and m.group(1) in _known_classes():
            return m.group(2)
    return None


def log_to_files(message: str) -> None:
    """Write `message` as an ERROR record to the root logger's file handlers only (the console
    gets the script's own one-line error)."""
    root, caller = logging.getLogger(), sys._getframe(1)
    record = root.makeRecord(root.name, logging.ERROR, caller.f_code.co_filename, caller.f_lineno,
                             message, None, None)
    for handler in root.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
