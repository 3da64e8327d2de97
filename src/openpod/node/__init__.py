"""The provider node agent: dials out to the control plane and runs pods through a runtime.

It imports runtimes and GPU discovery, never the control plane's services or store.
"""
