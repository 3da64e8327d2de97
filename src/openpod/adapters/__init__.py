"""Adapters: one package per outside system (database, pod runtimes, GPUs).

Each adapter has its own error types; callers translate them at their layer's boundary.
"""
