"""The real data the benchmarks read: ../shared/data (see its README)."""

import csv
import pathlib

DATA_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def read_tsv(data_dir, name):
    """The rows of one of the data TSVs (a header row, no quoting)."""
    with open(pathlib.Path(data_dir) / name, encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def column_texts(data_dir, sources):
    """The texts of `(file name, columns)` sources, row by row, in order."""
    return [row[column] for name, columns in sources
            for row in read_tsv(data_dir, name) for column in columns]
