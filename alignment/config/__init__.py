"""Stage configs: the YAML + dotted `key=value` loader (`loader`), the pieces every stage composes (`shared`) and the
command line of a stage (`command_line`: `[CONFIG.yaml] [key=value ...] [--help]`). No torch.

What a user imports is here: `from alignment.config import load_config, ModelConfig, UserError`. The errors live
in `alignment.common.errors`, which the ranking store and app import alone.
"""

from alignment.common.errors import ConfigError, UserError
from alignment.config.command_line import parse_stage_args
from alignment.config.loader import load_config
from alignment.config.shared import (
    AdapterConfig,
    CheckpointConfig,
    HubOptions,
    ModelConfig,
    TrackingConfig,
    TrainConfig,
)

__all__ = [
    "AdapterConfig",
    "CheckpointConfig",
    "ConfigError",
    "HubOptions",
    "ModelConfig",
    "TrackingConfig",
    "TrainConfig",
    "UserError",
    "load_config",
    "parse_stage_args",
]
