"""Backends answer the query functions: local files, or the metadata service."""
