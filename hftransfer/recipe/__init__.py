"""Recipes: YAML -> typed dataclasses, dotted overrides, validation before any model loads, and
the kit's training defaults.

``schema`` holds the recipe's sections and :func:`load_recipe`; ``training`` the ``train:``
section (defaults, checks, the effective-arguments merge); ``yamlfile`` reading and overrides;
``values`` typed building and what no recipe may hold.
"""
from .schema import (
                     EMBEDDED_MODEL_ID,
                     DataSpec,
                     ModelSpec,
                     Recipe,
                     TaskEntry,
                     load_recipe,
                     model_set,
                     recipe_changes,
                     run_name_from,
                     validate,
)
from .training import (
                     KIT_DEFAULTS,
                     check_distributed,
                     check_launcher_variables,
                     make_training_arguments,
                     training_values,
                     validate_training_arguments,
                     world_size,
)
from .values import build, check_seed, clip, coerce, quote
from .yamlfile import apply_overrides, parse_value

__all__ = ["EMBEDDED_MODEL_ID", "DataSpec", "ModelSpec", "Recipe", "TaskEntry", "load_recipe", "model_set", "recipe_changes",
           "run_name_from", "validate", "KIT_DEFAULTS", "check_distributed", "make_training_arguments",
           "training_values", "validate_training_arguments", "world_size", "check_launcher_variables", "build",
           "check_seed", "clip", "coerce", "quote", "apply_overrides", "parse_value"]
