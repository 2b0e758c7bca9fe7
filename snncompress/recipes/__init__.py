"""Recipes: versioned, validated documents listing the passes to run (see :mod:`.document`)."""

from snncompress.recipes.document import Recipe, RecipeStep, apply_settings
from snncompress.recipes.messages import RecipeError
from snncompress.recipes.validate import RECIPE_VERSION, ordering_problems

__all__ = ["RECIPE_VERSION", "Recipe", "RecipeError", "RecipeStep", "apply_settings", "ordering_problems"]
