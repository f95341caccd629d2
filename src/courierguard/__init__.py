"""Courier Guard: the safety valve for customer personal data inside a courier company."""

__version__ = "0.1.0"
