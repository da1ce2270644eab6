"""Export a run's scalars, layer series and events as Parquet or CSV files (imports no torch).

    avionics export RUN --format parquet|csv [-o DIR] [--quiet]

writes ``scalars``, ``layers`` and ``events`` (``.parquet`` or ``.csv``) and ``meta.json`` into
``DIR`` (default ``RUN/export``). Each file holds the rows of the matching reader call
(``instrument.load(RUN).scalars()``, ``.layers()``, ``.events()``), so pandas reads them back
equal; the events' ``evidence`` (a dict) is stored as JSON text. Layer series are read and
written in chunks of steps, so a long run never has to fit in memory at once; a progress bar
(tqdm, on a terminal) counts the chunks. Exit status: 0 written, 2 the run cannot be read or an
argument is wrong.
"""

from __future__ import annotations

import json
import os
import sys

from instrument.store.errors import StoreError

HELP = "write a run's scalars, layer series and events as Parquet or CSV files"

FORMATS = ("parquet", "csv")

CHUNK_ROWS = 1_000_000
"""Layer rows read and written per chunk (steps per chunk = this / layers of the series)."""

TABLES = ("scalars", "layers", "events")


def add_arguments(parser) -> None:
    parser.add_argument("run", help="run directory (or its avionics.db)")
    parser.add_argument("--format", required=True, choices=FORMATS, metavar="{parquet,csv}",
                        help="file format: parquet (needs pyarrow) or csv")
    parser.add_argument("-o", "--out", default=None, metavar="DIR",
                        help="directory to write into (created; default RUN/export)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from instrument.store.reader import load

    try:
        source = load(args.run)
    except StoreError as exc:
        print(f"avionics export: {exc}", file=sys.stderr)
        return 2
    out = args.out or os.path.join(source.run_dir, "export")
    try:
        paths = export(source, out, args.format, progress=not args.quiet)
    except (ValueError, ImportError, OSError, StoreError) as exc:
        print(f"avionics export: {exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


def export(run, out: str, fmt: str, progress: bool = True) -> list:
    """Write ``run`` (a :class:`~instrument.store.reader.Run`) into directory ``out`` as
    ``fmt`` files; return the paths written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    sink_cls = _ParquetSink if fmt == "parquet" else _CsvSink
    sink_cls.check()
    os.makedirs(out, exist_ok=True)
    paths = []
    scalars = sink_cls(os.path.join(out, f"scalars.{fmt}"))
    scalars.write(run.scalars())
    paths.append(scalars.close())
    layers = sink_cls(os.path.join(out, f"layers.{fmt}"))
    for frame in _layer_chunks(run, progress):
        layers.write(frame)
    if layers.empty:
        layers.write(run.layers())  # no layer series: still a file with the columns
    paths.append(layers.close())
    events = run.events()
    events["evidence"] = [None if e is None else json.dumps(e, sort_keys=True)
                          for e in events["evidence"]]
    sink = sink_cls(os.path.join(out, f"events.{fmt}"))
    sink.write(events)
    paths.append(sink.close())
    meta_path = os.path.join(out, "meta.json")
    with open(meta_path, "w") as fh:
        json.dump(run.meta, fh, indent=1, sort_keys=True, default=str)
    paths.append(meta_path)
    return paths


def _layer_chunks(run, progress: bool):
    """Frames of ``run.layers()`` rows, series by series, each series in step chunks."""
    first, last = run.step_range()
    if first is None:
        return
    plan = []
    for key in run.keys("layer"):
        per_chunk = max(1, CHUNK_ROWS // max(1, len(run.layer_names(key))))
        plan.extend((key, lo, min(lo + per_chunk - 1, last))
                    for lo in range(first, last + 1, per_chunk))
    bar = _progress(len(plan), progress)
    try:
        for key, lo, hi in plan:
            frame = run.layers(keys=[key], start=lo, stop=hi)
            if len(frame):
                yield frame
            bar.update(1)
    finally:
        bar.close()


def _progress(total: int, enabled: bool):
    """A tqdm bar over ``total`` chunks (shown on a terminal only: tqdm's ``disable=None``)."""
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm comes with the integrations extra; without it, no bar
        enabled = False
    if not enabled:
        return _NoBar()
    return tqdm(total=total, unit="chunk", desc="layers", disable=None, file=sys.stderr)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class _ParquetSink:
    """Appends frames to one Parquet file (row groups), schema taken from the first frame."""

    def __init__(self, path: str):
        self.path, self._writer, self.empty = path, None, True

    @staticmethod
    def check() -> None:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ImportError("--format parquet needs pyarrow: pip install pyarrow (or "
                              "avionics[integrations]), or use --format csv") from None

    def write(self, frame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._writer is None:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            self._schema = table.schema
            self._writer = pq.ParquetWriter(self.path, self._schema)
        else:
            table = pa.Table.from_pandas(frame, schema=self._schema, preserve_index=False)
        self._writer.write_table(table)
        self.empty = self.empty and len(frame) == 0

    def close(self) -> str:
        if self._writer is not None:
            self._writer.close()
        return self.path


class _CsvSink:
    """Appends frames to one CSV file, the header once."""

    def __init__(self, path: str):
        self.path, self._started, self.empty = path, False, True

    @staticmethod
    def check() -> None:
        pass

    def write(self, frame) -> None:
        frame.to_csv(self.path, mode="a" if self._started else "w", header=not self._started,
                     index=False)
        self._started = True
        self.empty = self.empty and len(frame) == 0

    def close(self) -> str:
        return self.path
