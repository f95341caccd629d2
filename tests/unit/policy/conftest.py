"""Fixtures for the policy tests."""

from policy_factories import engine

__all__ = ["engine"]
