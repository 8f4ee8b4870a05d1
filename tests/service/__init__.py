"""Tests of the HTTP service, against the real app on uvicorn: see conftest.py."""
