"""The results file of a sweep: JSON Lines, one record per line, appended as the sweep goes.

Record types (field ``type``):

- ``header``: the first line; what the results depend on (task, model fingerprint, seed,
  budget, framing, damage policy) and the reference (error-free fp32) metric. A rerun whose
  settings differ from the header refuses to mix results (``SweepError``).
- ``digital``: one per MCS: the compressed model that fits the budget, its size, the target
  weight SNR found, and its error-free metric.
- ``tune``: receiver parameters tuned on the validation split for one (scheme, channel, SNR).
- ``point``: one grid point (channel, scheme, SNR or noise std, design SNR, draw) and its
  metric. ``key`` identifies it; a rerun skips keys already present.
- ``run``: written at the end of each run: wall time, points computed and skipped, evaluations.

A line cut short (the process was killed while writing) is dropped when the file is reopened.
"""
from __future__ import annotations

import json
import os
from typing import Optional

from ..errors import NNCodecError

__all__ = ["SweepError", "ResultsFile", "read_records", "FORMAT", "VERSION"]

FORMAT = "nncodec-sweep"
VERSION = 1


class SweepError(NNCodecError, ValueError):
    """A sweep cannot run as asked (bad settings, or a results file from another sweep)."""


def read_records(path) -> list:
    """Every complete record of a results file (a torn last line is ignored)."""
    out = []
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    if data and not data.endswith(b"\n"):
        lines = lines[:-1]  # torn last line
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SweepError(f"{path}: line {i + 1} is not JSON ({exc.msg}); not a sweep results file?") from None
        if not isinstance(rec, dict) or "type" not in rec:
            raise SweepError(f"{path}: line {i + 1} is not a sweep record")
        out.append(rec)
    if out and (out[0].get("type") != "header" or out[0].get("format") != FORMAT):
        raise SweepError(f"{path} is not an nncodec sweep results file")
    return out


class ResultsFile:
    """Append-only results file (or an in-memory one when ``path`` is None)."""

    def __init__(self, path: Optional[str], force: bool = False):
        self.path = None if path is None else os.fspath(path)
        self.records = []
        self._fh = None
        if self.path is None:
            return
        parent = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(parent):
            raise SweepError(f"directory {parent} does not exist")
        if os.path.exists(self.path) and not force:
            self.records = read_records(self.path)
            self._trim_torn_line()
        self._fh = open(self.path, "w" if force or not os.path.exists(self.path) else "a", encoding="utf-8")

    def _trim_torn_line(self) -> None:
        with open(self.path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)

    @property
    def header(self) -> Optional[dict]:
        return self.records[0] if self.records else None

    def append(self, rec: dict) -> None:
        self.records.append(rec)
        if self._fh is not None:
            self._fh.write(json.dumps(rec, sort_keys=True, allow_nan=False) + "\n")
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            try:
                os.fsync(self._fh.fileno())
            except OSError:  # pragma: no cover
                pass
            self._fh.close()
            self._fh = None
