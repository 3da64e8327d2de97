"""The domain: pure rules of openpod (ids, pod lifecycle, ports, SSH keys, GPUs, money).

Nothing here does I/O or knows a framework; every layer above may use it.
"""
