"""Onward: a self-hosted workbench where LLM agents do real work, and every run is a durable job."""

from __future__ import annotations

__version__ = "0.1.0"
