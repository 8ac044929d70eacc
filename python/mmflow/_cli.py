"""The ``mmflow`` binary: found beside the interpreter (where the wheel installs it), run with
``--json``, its document parsed; its stderr passed through as it comes and kept for errors."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from ._errors import ConfigError, MmflowError

#: The layout of the binary's ``--json`` documents this package reads.
JSON_FORMAT = 1

#: Exit code of bad config or usage.
EXIT_USAGE = 2

#: The first word of the binary's log lines (its messages to people are the other lines).
_LOG_LEVELS = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR"}

#: ``set=`` values: a mapping of dotted keys to Python values, or ``KEY=VALUE`` strings.
Overrides = Union[Mapping[str, Any], Sequence[str], None]


def binary() -> str:
    """The ``mmflow`` binary: ``$MMFLOW_BIN``, else the one the wheel installed beside this
    interpreter, else the first on ``PATH``."""
    chosen = os.environ.get("MMFLOW_BIN")
    if chosen:
        return chosen
    name = "mmflow.exe" if os.name == "nt" else "mmflow"
    beside = Path(sysconfig.get_path("scripts")) / name
    if beside.is_file():
        return str(beside)
    found = shutil.which("mmflow")
    if found:
        return found
    raise MmflowError(
        "the mmflow binary was not found: install the mmflow wheel, or set MMFLOW_BIN",
        exit_code=127,
    )


@dataclass(frozen=True)
class Call:
    """A finished call of the binary."""

    args: list[str]
    exit_code: int
    stdout: str
    stderr: str

    def error_message(self) -> str:
        """The binary's own message: what it printed on stderr other than log lines (a
        config's problems and the ``error:`` line after them), else its ERROR log lines."""
        lines = [line.rstrip() for line in self.stderr.splitlines() if line.strip()]
        said = [line for line in lines if line.split()[0] not in _LOG_LEVELS]
        if not said:
            said = [
                line.strip()[len("ERROR ") :] for line in lines if line.strip().startswith("ERROR ")
            ]
        return "\n".join(said) or f"mmflow exited with code {self.exit_code}"

    def document(self) -> Mapping[str, Any] | None:
        """The JSON document on stdout, if one was printed."""
        text = self.stdout.strip()
        if not text:
            return None
        document = json.loads(text.splitlines()[-1])
        if document.get("format") != JSON_FORMAT:
            raise MmflowError(
                f"the mmflow binary prints JSON format {document.get('format')}, this package "
                f"reads format {JSON_FORMAT}: install matching versions",
                exit_code=self.exit_code,
                stderr=self.stderr,
            )
        return document

    def raise_for_code(self) -> None:
        """Raises the error a non-zero exit code stands for."""
        if self.exit_code == 0:
            return
        kind = ConfigError if self.exit_code == EXIT_USAGE else MmflowError
        raise kind(self.error_message(), exit_code=self.exit_code, stderr=self.stderr)


def call(args: Iterable[str], *, echo: bool = False) -> Call:
    """Runs ``mmflow ARGS``; with ``echo``, its stderr (progress, warnings) is copied to
    ``sys.stderr`` line by line as it comes."""
    argv = [binary(), *args]
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        encoding="utf-8",
        errors="replace",
    )
    kept: list[str] = []

    def drain() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            kept.append(line)
            if echo:
                sys.stderr.write(line)
                sys.stderr.flush()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    assert process.stdout is not None
    stdout = process.stdout.read()
    code = process.wait()
    reader.join()
    return Call(args=argv[1:], exit_code=code, stdout=stdout, stderr="".join(kept))


def checked_document(args: Iterable[str], *, echo: bool = False) -> Mapping[str, Any]:
    """Runs ``mmflow ARGS`` (which must print a document) and returns the document, or raises
    the error its exit code stands for."""
    finished = call(args, echo=echo)
    finished.raise_for_code()
    document = finished.document()
    if document is None:
        raise MmflowError(
            f"mmflow {' '.join(finished.args)} printed no JSON document",
            exit_code=finished.exit_code,
            stderr=finished.stderr,
        )
    return document


def override_args(overrides: Overrides) -> list[str]:
    """``--set`` arguments: each value written as the TOML value it is."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        raise TypeError("set= takes a mapping of keys to values, or a list of 'KEY=VALUE' strings")
    pairs = (
        [f"{key}={toml_value(value)}" for key, value in overrides.items()]
        if isinstance(overrides, Mapping)
        else [str(item) for item in overrides]
    )
    args: list[str] = []
    for pair in pairs:
        args += ["--set", pair]
    return args


def toml_value(value: Any) -> str:
    """A Python value (bool, int, finite float, str, list, tuple, dict) as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"set=: {value!r} is not a finite number")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"set=: {type(value).__name__} values cannot be written as TOML")
