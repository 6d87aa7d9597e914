"""Option declarations (one source of truth) and the loader that turns files/flags into a validated Config."""

from tunery.config.loader import Config, parse_config

__all__ = ["Config", "parse_config"]
