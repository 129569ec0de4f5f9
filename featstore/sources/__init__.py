"""Readers of input layouts. Each returns a :class:`featstore.sources.base.Listing`."""

from __future__ import annotations
