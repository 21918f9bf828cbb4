"""Prometheus view of every ring, read from the shared headers at scrape time (no per-record cost)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from ipc.ring import RingStats
from ipc.stats import RING_ENDS, prometheus_histogram


class RingCollector(Collector):
    """Exposes `ipc_*` metrics for the rings that `source()` returns."""

    def __init__(self, source: Callable[[], Iterable[RingStats]]) -> None:
        self._source = source

    def collect(self) -> Iterator:
        labels = ["channel", "producer", "consumer"]
        lat = HistogramMetricFamily("ipc_one_way_seconds", "Ring one-way latency (producer stamp to consume)", labels=labels)
        records = CounterMetricFamily("ipc_records", "Records consumed", labels=labels)
        nbytes = CounterMetricFamily("ipc_bytes", "Payload bytes consumed", labels=labels)
        dropped = CounterMetricFamily("ipc_dropped", "Records dropped on a full ring", labels=labels)
        wakes = CounterMetricFamily("ipc_consumer_wakes", "Consumer wake-ups from the doorbell", labels=labels)
        occupancy = GaugeMetricFamily("ipc_occupancy_ratio", "Bytes in flight / capacity", labels=labels)
        peak = GaugeMetricFamily("ipc_peak_occupancy_ratio", "Peak bytes in flight / capacity", labels=labels)
        seen: set[str] = set()
        for st in self._source():
            if st.label in seen:  # each ring is visible from both of its ends
                continue
            seen.add(st.label)
            producer, consumer, _ = RING_ENDS.get(st.label, ("?", "?", ""))
            lv = [st.label, producer, consumer]
            buckets, total = prometheus_histogram(st.histogram)
            lat.add_metric(lv, buckets, total)
            records.add_metric(lv, st.records_out)
            nbytes.add_metric(lv, st.bytes_out)
            dropped.add_metric(lv, st.dropped)
            wakes.add_metric(lv, st.wakes)
            occupancy.add_metric(lv, st.occupancy)
            peak.add_metric(lv, st.peak_used / st.capacity if st.capacity else 0.0)
        yield from (lat, records, nbytes, dropped, wakes, occupancy, peak)
