"""The per-app cache series in /metrics, and `describe` reading them back."""

from __future__ import annotations

from faasd_py.cache import CacheStatistics
from faasd_py.cli._functions import _cache_figures, cache_lines
from faasd_py.gateway._metrics import GatewayMetrics


def stats(app: str, hits: int) -> CacheStatistics:
    return CacheStatistics(
        app=app,
        hits=hits,
        misses=1,
        bypassed_reads=0,
        writes=2,
        version_checks=4,
        version_check_seconds_total=0.02,
        version_check_seconds_max=0.009,
        bytes_cached=1500,
        entries=3,
        capacity=4096,
        evictions=1,
        prewarmed_keys=5,
        prewarmed_read=2,
        storage_errors=0,
    )


def test_series_per_app_and_describe_lines() -> None:
    metrics = GatewayMetrics(lambda: {})
    metrics.add_caches(lambda: {"shop": stats("shop", 3), "other": stats("other", 9)})
    text = metrics.render().decode()
    assert 'faasd_cache_hits_total{app="shop"} 3.0' in text
    assert 'faasd_cache_bytes{app="shop"} 1500.0' in text
    figures = _cache_figures(text, "shop")
    assert figures["hits"] == 3 and figures["capacity_bytes"] == 4096
    lines = cache_lines("shop", figures)
    assert lines[0] == "Cache (app shop):"
    assert "hits 3, misses 1, bypassed 0 (hit rate 75%); writes 2" in lines[1]
    assert "1,500 bytes in 3 objects, budget 4,096; evictions 1" in lines[2]
    assert "version checks 4, mean 5.00 ms, max 9.00 ms" in lines[3]
    assert "pre-warmed 5 objects, 2 of them read since" in lines[4]


def test_no_cache_loaded_means_no_figures() -> None:
    metrics = GatewayMetrics(lambda: {})
    metrics.add_caches(lambda: {})
    assert _cache_figures(metrics.render().decode(), "shop") == {}
