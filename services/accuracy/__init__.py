"""The accuracy service."""
