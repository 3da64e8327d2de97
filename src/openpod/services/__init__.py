"""Services: the use cases of the control plane, free of any web framework.

Each function takes a database session (one transaction) and returns store rows or plain values;
failures are `ServiceError`s, which the API layer turns into HTTP answers.
"""
