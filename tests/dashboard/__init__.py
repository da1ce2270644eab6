"""Tests of the browser dashboard (mirrors dashboard/)."""
