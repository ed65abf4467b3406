"""Typed configuration loaded from YAML: targets (devices), profiles (optimisation recipes) and labs."""

from edgeopt.config.base import StrictModel, available, config_dirs, load_model_file
from edgeopt.config.profile import (
                                    Calibration,
                                    DistillOptions,
                                    ONNXOptions,
                                    Profile,
                                    PruneOptions,
                                    QATOptions,
                                    TFLiteOptions,
                                    Training,
                                    list_profiles,
                                    load_profile,
)
from edgeopt.config.target import Connection, Memory, Target, apply_connection_overrides, list_targets, load_target

__all__ = ["Calibration", "Connection", "DistillOptions", "Memory", "ONNXOptions", "Profile", "PruneOptions",
           "QATOptions", "StrictModel", "TFLiteOptions", "Target", "Training", "apply_connection_overrides",
           "available", "config_dirs", "list_profiles", "list_targets", "load_model_file", "load_profile",
           "load_target"]
