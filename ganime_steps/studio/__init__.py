"""Style studio: a FastAPI app, HTTP API and plain HTML/JS page over one trained generator (see README)."""
