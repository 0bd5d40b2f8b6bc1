"""Parcours for services: the Python client of the HTTP API."""

from parcours_client.client import ParcoursClient, ParcoursClientError, ParcoursError, ParcoursUnavailableError

__all__ = ["ParcoursClient", "ParcoursClientError", "ParcoursError", "ParcoursUnavailableError"]
