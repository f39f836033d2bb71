"""Scraping /metrics of a real server and reading it with prometheus-client's own parser."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.clients import eventually, http


def samples(text: str) -> list[Any]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(text: str, name: str, **labels: str) -> float | None:
    """The sample ``name`` whose labels include ``labels``; None if absent."""
    for sample in samples(text):
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    return None


def total(text: str, name: str, **labels: str) -> float:
    """The sum of every sample ``name`` whose labels include ``labels`` (0 if none)."""
    return sum(
        s.value
        for s in samples(text)
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def scrape(url: str, api_key: str | None = None) -> str:
    status, body = await http("GET", f"{url}/metrics", api_key=api_key)
    assert status == 200, body
    return body


async def scraped_until(url: str, check: Any, api_key: str | None = None) -> str:
    """Scrape until ``check(text)`` holds (deadline: eventually's)."""

    async def attempt() -> str | None:
        text = await scrape(url, api_key)
        return text if check(text) else None

    return await eventually(attempt)
