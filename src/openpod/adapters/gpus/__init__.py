"""GPUs of this host: only this package talks to NVML."""
