"""Errors of the ingest package, one root, with retryable vs permanent in the type.

::

    IngestError
     +-- StoreError                 the graph store failed
     |    +-- StoreUnavailable      retryable: connection lost, leader switch, transient lock conflict
     |    +-- StoreRejected         permanent: the store refused this data (bad value, constraint)
     +-- BrokerError                Kafka failed
          +-- BrokerUnavailable     retryable
          +-- BrokerRejected        permanent (record too large, unknown topic...)

Bad *data* is not an exception at all: decoding returns a :class:`ingest.decode.Rejection` value that
goes to the dead-letter topic. Exceptions are for broken infrastructure.
"""

from __future__ import annotations


class IngestError(Exception):
    """Root of every ingest error."""

    retryable: bool = False


class StoreError(IngestError):
    """The graph store failed."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or asked to retry: try again with backoff."""

    retryable = True


class StoreRejected(StoreError):
    """The store refused the write for good: retrying the same rows cannot succeed."""


class BrokerError(IngestError):
    """Kafka failed."""


class BrokerUnavailable(BrokerError):
    """Kafka cannot be reached: try again with backoff."""

    retryable = True


class BrokerRejected(BrokerError):
    """Kafka refused a request for good."""


class CommitRefused(BrokerError):
    """The consumer group refused an offset commit because the partitions moved (a rebalance, or this
    member was dropped from the group). Nothing is lost: the batch is durable in the store, and its
    records come again from the last committed offsets, to this worker or another, where the store's
    cursors skip their data. Not retryable: the same commit cannot succeed in the new generation."""
