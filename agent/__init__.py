"""Umbra agent: the workstation daemon that finds shadow AI."""

__version__ = "0.1.0"
