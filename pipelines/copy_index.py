"""Copy a dedup index directory into PostgreSQL.

    python -m pipelines.copy_index --source DIR --target postgresql://...

Every run of the directory's current version becomes one version of the
index in the database, in the same order (`v000001-<run>`, ...), with the
entries it kept; the centroids come with the first. Each segment file is
checked against its checksum as it is read, and afterwards each run's
entry count in the database against the directory's. The database must
hold no run yet, or the first runs of this directory (a copy that failed
midway: run it again to add the rest). The directory is left as it is.
"""

from __future__ import annotations

import argparse
import dataclasses

from apache_beam.options.pipeline_options import PipelineOptions

from embgemma_keras.config import CopyIndexConfig
from embgemma_keras.config import add_flags
from embgemma_keras.config import from_flags
from embgemma_keras.index.database import DatabaseIndex
from embgemma_keras.index.database import is_database_url
from embgemma_keras.index.database import redact
from embgemma_keras.progress import say
from pipelines.options import JobConfig
from pipelines.options import run_task
from transforms.index.read_commit import copy_to_database
from transforms.index.read_commit import open_directory

REQUIRED = ("source", "target")


class CopyIndexOptions(PipelineOptions):
    """copy_index: the index directory and the database."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_flags(parser, CopyIndexConfig)


@dataclasses.dataclass(frozen=True)
class CopyIndexJobConfig(JobConfig):
    """copy_index's flags, parsed once.

    Args:
        copy: the index directory and the database URL.
    """

    copy: CopyIndexConfig

    OPTIONS = (CopyIndexOptions,)

    @classmethod
    def from_flags(cls, flags: argparse.Namespace) -> CopyIndexJobConfig:
        return cls(from_flags(CopyIndexConfig, flags))


def copy_directory(config: CopyIndexJobConfig) -> dict[str, int]:
    """Copies the index; returns each run copied with its entries.

    Raises:
        ValueError: a target that is no postgresql:// URL.
        IndexMismatchError: no index at the source, a segment that fails
            its checksum, a database made with other settings or holding
            other runs, or a count that differs after.
    """
    target = config.copy.target
    if not is_database_url(target):
        raise ValueError(f"--target takes a postgresql:// URL, got "
                         f"{redact(target)!r}")
    source = open_directory(config.copy.source)
    with DatabaseIndex.open(target, source.settings) as database:
        copied = copy_to_database(source, database)
        say(f"copied {sum(copied.values())} entries of {len(copied)} runs "
            f"from {source.where} to {database.where}: version "
            f"{database.version}")
    return copied


def main(argv: list[str] | None = None) -> None:
    run_task(argv, REQUIRED, copy_directory, __doc__)


if __name__ == "__main__":
    main()
