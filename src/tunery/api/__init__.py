"""The OpenAI-compatible API server (`tunery api`); FastAPI and uvicorn are imported only when it starts."""

from tunery.api.app import create_app, run_api

__all__ = ["create_app", "run_api"]
