"""`WithDeadLetters`: the two outputs of every stage that can refuse records.

A refused record leaves on `dead_letters` as the dead letter of
`embgemma_keras.records.schema` (`stage`, `error`, `raw`, `raw_encoding`),
so it can be written to a file, Pub/Sub or BigQuery and replayed after a
fix.
"""

import typing

import apache_beam as beam


class WithDeadLetters(typing.NamedTuple):
    """What a stage made, and what it refused (with the reason)."""

    output: beam.PCollection
    dead_letters: beam.PCollection
