"""Errors meant for the operator: one line that says what went wrong, where, and what to do."""

from __future__ import annotations


class OperatorError(Exception):
    """A problem the operator can fix (bad file, missing permission, daemon down)."""
