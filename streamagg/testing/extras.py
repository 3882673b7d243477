"""Columns beyond the three required ones, each a function of the impression and its campaign."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from .fields import U64, keyed_hash, uniform
from .vocabulary import (
    AGENTS,
    COUNTRIES,
    DEVICES,
    DOMAINS,
    PAGE_SECTIONS,
    TRAFFIC_SOURCES,
    Vocabulary,
)

# Salts give every derived attribute of an impression its own hash stream (1 to 7: rows.py).
_SALT_AD, _SALT_DOMAIN, _SALT_AGENT, _SALT_COST = 8, 9, 10, 11
_SALT_PAGE, _SALT_SECTION, _SALT_SOURCE, _SALT_SIZES = 12, 13, 14, 15
_SALT_CREATIVE, _SALT_PLACEMENT, _SALT_DEVICE, _SALT_BID = 16, 17, 18, 19


def extra_columns(columns: Sequence[str], seed: int, keys: npt.NDArray[np.uint64],
                  campaign: npt.NDArray[np.intp], vocab: Vocabulary) -> dict[str, pa.Array]:
    """The values of every column of ``columns`` but the required three, one per key.

    They depend on the impression's key and its campaign alone, so a duplicate that keeps
    both (no conflict, no other rendering) is an exact copy of the row it repeats.
    """
    k = keys
    cols: dict[str, pa.Array] = {}
    if "AD_ID" in columns:
        ad = vocab.ad_base[campaign] + (keyed_hash(seed, k, _SALT_AD) % U64(12)).astype(np.int64)
        cost = (vocab.cost_base[campaign] * (0.5 + uniform(seed, k, _SALT_COST))).astype(np.int64)
        cols["AD_ID"] = pc.cast(pa.array(ad), pa.string())
        cols["COST"] = _micro_dollars(cost)
    if "SITE_DOMAIN" in columns:
        domain = np.searchsorted(vocab.domain_cdf, uniform(seed, k, _SALT_DOMAIN))
        domains = pa.array(DOMAINS, pa.string()).take(
            pa.array(np.minimum(domain, len(DOMAINS) - 1)))
        agent = np.searchsorted(vocab.agent_cdf, uniform(seed, k, _SALT_AGENT))
        cols["SITE_DOMAIN"] = domains
        cols["USER_AGENT"] = vocab.agents.take(pa.array(np.minimum(agent, len(AGENTS) - 1)))
        if "REFERRER" in columns:
            cols["REFERRER"] = _referrers(seed, k, domains, vocab.campaign_ids.take(
                pa.array(campaign)))
    if "SITE_ID" in columns:
        # A long tail of sites: the square of a uniform puts most traffic on low ids.
        site = 100 + (uniform(seed, k, _SALT_DOMAIN) ** 2 * 5_000).astype(np.int64)
        country = np.floor(uniform(seed, k, _SALT_AGENT) ** 1.5 * len(COUNTRIES))
        cols["SITE_ID"] = pc.cast(pa.array(site), pa.string())
        cols["COUNTRY"] = pa.array(COUNTRIES, pa.string()).take(
            pa.array(country.astype(np.int64)))
    if "CREATIVE_ID" in columns:
        creative = vocab.ad_base[campaign] * 100 + (
            keyed_hash(seed, k, _SALT_CREATIVE) % U64(40)).astype(np.int64)
        placement = 100_000 + (uniform(seed, k, _SALT_PLACEMENT) ** 2 * 800_000).astype(np.int64)
        device = np.searchsorted(vocab.device_cdf, uniform(seed, k, _SALT_DEVICE))
        bid = (vocab.cost_base[campaign] * (0.8 + uniform(seed, k, _SALT_BID))).astype(np.int64)
        cols["CREATIVE_ID"] = pc.cast(pa.array(creative), pa.string())
        cols["PLACEMENT_ID"] = pc.cast(pa.array(placement), pa.string())
        cols["DEVICE"] = pa.array(DEVICES, pa.string()).take(
            pa.array(np.minimum(device, len(DEVICES) - 1)))
        cols["BID_PRICE"] = _micro_dollars(bid)
    return cols


def _micro_dollars(values: npt.NDArray[np.int64]) -> pa.Array:
    """Amounts below a dollar, in micro-dollars, as ``0.001234``."""
    return pc.binary_join_element_wise(
        "0.", pc.utf8_lpad(pc.cast(pa.array(values), pa.string()), width=6, padding="0"), "")


def _referrers(seed: int, k: npt.NDArray[np.uint64], domains: pa.Array,
               campaigns: pa.Array) -> pa.Array:
    """The page the ad was shown on, quoted as exports quote text: some hold a comma."""
    n = len(k)
    section = keyed_hash(seed, k, _SALT_SECTION) % U64(len(PAGE_SECTIONS))
    source = keyed_hash(seed, k, _SALT_SOURCE) % U64(len(TRAFFIC_SOURCES))
    page = pc.cast(pa.array((keyed_hash(seed, k, _SALT_PAGE) % U64(90_000_000)).astype(np.int64)
                            + 10_000_000), pa.string())
    sizes = pa.array(["", "&sizes=300x250,728x90"], pa.string()).take(
        pa.array((uniform(seed, k, _SALT_SIZES) < 0.4).astype(np.int64)))
    parts = [
        pa.array(['"https://'] * n, pa.string()), domains, "/",
        pa.array(PAGE_SECTIONS, pa.string()).take(pa.array(section.astype(np.int64))), "/",
        page, "?utm_source=",
        pa.array(TRAFFIC_SOURCES, pa.string()).take(pa.array(source.astype(np.int64))),
        "&utm_campaign=", campaigns, sizes, '"',
    ]
    return pc.binary_join_element_wise(*parts, "")
