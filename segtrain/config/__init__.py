"""Configs: the typed schema, YAML loading with ``extends`` and overrides, validation."""
from segtrain.config.load import load_config, load_raw, parse_override, to_dict, to_yaml
from segtrain.config.schema import Config, ConfigError
from segtrain.config.validate import build_config

__all__ = ["Config", "ConfigError", "build_config", "load_config", "load_raw", "parse_override", "to_dict", "to_yaml"]
