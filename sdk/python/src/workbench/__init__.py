"""Workbench client SDK."""
