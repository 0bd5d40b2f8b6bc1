"""Settings, logging and tracing set-up shared by every Parcours process."""

from config.settings import Settings, get_settings

__all__ = ["Settings", "get_settings"]
