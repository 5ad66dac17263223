"""Backends: the only code that does I/O. Each implements `Backend.complete` and `Backend.slot`."""
