"""The service path: counting GET transport, capability detection, query plans."""
