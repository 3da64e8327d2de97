"""Pod runtimes: only this package starts, stops and removes pod processes or containers."""
