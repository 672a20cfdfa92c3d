"""Runtimes and the composition root: embedded engine, Faust app, CLI, HTTP service."""
