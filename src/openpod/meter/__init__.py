"""The meter: one small process beside each pod's workload (docs/metering.md).

It watches the workload, journals `started` / `heartbeat` / `stopped` events to disk (each
fsynced before it is sent) and delivers them to the control plane's `/meter/connect`.

Only the standard library, `websockets` and (lazily, where installed) `pynvml` may be imported
here, so that one meter per pod stays small in memory: no other openpod package, no pydantic.
"""
