"""The console: server-rendered pages at ``/console`` for a growth team (journeys as graphs with their live
figures, who waits where, pause/resume/archive, customers), signed in with an API key; and ``/docs`` served from
local Swagger UI assets. ``install(app)`` adds both to the API app."""

from api.console.routes import install

__all__ = ["install"]
