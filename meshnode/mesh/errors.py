"""Errors the mesh agent raises at its callers (never at peers: those are counted)."""

from __future__ import annotations


class AgentError(ValueError):
    """A request the agent cannot carry out; the message says why, for the user."""


class NotAdmin(AgentError):
    """Only a node holding the mesh's authority key can do this."""
