"""/metrics for the records writer: its buffer, its connection, what was lost, read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from voicecall.records import CallRecords


class RecordsCollector(Collector):
    def __init__(self, records: CallRecords) -> None:
        self.records = records

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        r = self.records
        engine = r.target.engine
        yield _gauge("records_db_connected", "1 while the records database is reachable", engine, int(r.connected))
        yield _gauge("records_buffered", "Records waiting to be written (grows while the database is away)",
                     engine, r.buffered())
        yield _counter("records_dropped", "Records dropped: buffer full (records.buffer_max) or away at shutdown",
                       engine, r.dropped)
        yield _counter("records_write_errors", "Record writes the database rejected (not retried)", engine, r.errors)
        yield _counter("records_db_disconnects", "Times the records database connection was lost", engine, r.disconnects)


def _gauge(name: str, doc: str, engine: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["engine"])
    family.add_metric([engine], value)
    return family


def _counter(name: str, doc: str, engine: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=["engine"])
    family.add_metric([engine], value)
    return family
