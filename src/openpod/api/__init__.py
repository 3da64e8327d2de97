"""The HTTP API (FastAPI): thin routes over services; HTTP status codes exist only here."""
