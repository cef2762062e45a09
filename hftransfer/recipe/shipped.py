"""The recipes that travel inside the package: ``hftransfer ls`` lists them wherever the kit is
installed, ``hftransfer recipe NAME --to FILE`` writes one out to edit and train.

They live in ``hftransfer/recipes`` (the repository's ``recipes/`` links there), so a checkout and
a wheel install read the same files.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import HFTransferError

PACKAGE = Path(__file__).resolve().parents[1]
RECIPES = PACKAGE / "recipes"
ACCELERATE = "accelerate"  # Accelerate launch configs, not recipes: listed apart
# Shipped recipes name the sample data as a checkout sees it (`hftransfer/sample_data/...`,
# relative to the repository root); written out, they name the installed files instead.
_SAMPLE_PATH = re.compile(r"(?<![\w/.-])hftransfer/sample_data/([\w.-]+)")
_PLAIN_SCALAR = re.compile(r"[\w./-]+")
_SENTENCE_END = re.compile(r"(?<!\bal\.)(?<!\be\.g\.)(?<!\bi\.e\.)(?<=\.)\s")
SUMMARY = 100


@dataclass(frozen=True)
class ShippedRecipe:
    name: str  # the path under recipes/ without .yaml: "quickstart", "accelerate/cpu-2proc"
    path: Path
    summary: str  # the first sentence of its opening comment

    @property
    def is_accelerate_config(self) -> bool:
        return self.name.startswith(f"{ACCELERATE}/")


def shipped_recipes() -> list[ShippedRecipe]:
    """Every shipped recipe and Accelerate config, by name."""
    if not RECIPES.is_dir():
        return []
    return [ShippedRecipe(path.relative_to(RECIPES).with_suffix("").as_posix(), path, _summary(path))
            for path in sorted(RECIPES.glob("**/*.yaml")) if path.is_file()]


def _summary(path: Path) -> str:
    """The opening comment's first sentence (at most ``SUMMARY`` characters), without the command
    line that starts most recipes."""
    lines = path.read_text(encoding="utf-8").splitlines()
    comment = []
    for number, line in enumerate(lines):
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if number == 0 and re.match(r"(hftransfer|accelerate launch|On machine \d)\b", text):
            continue  # the command that runs it: `ls` says how, the summary says what
        comment.append(text)
    sentence = _SENTENCE_END.split(" ".join(comment), maxsplit=1)[0].strip()
    return sentence if len(sentence) <= SUMMARY else sentence[:SUMMARY - 3].rsplit(" ", 1)[0] + " ..."


def find(name: str) -> ShippedRecipe:
    """The shipped recipe called ``name`` (``quickstart``, ``quickstart.yaml`` or
    ``recipes/quickstart.yaml`` alike)."""
    wanted = name.strip().removeprefix("recipes/").removesuffix(".yaml")
    recipes = shipped_recipes()
    for recipe in recipes:
        if recipe.name == wanted:
            return recipe
    names = ", ".join(r.name for r in recipes) or "(none: the package has no recipes folder)"
    raise HFTransferError(f"no shipped recipe is called {name!r}; `hftransfer ls` lists them: {names}")


def recipe_text(recipe: ShippedRecipe, destination: Path | None = None) -> str:
    """The recipe's text as a user gets it: sample-data paths point at the installed sample data
    (so it trains from any directory), and its opening command names ``destination``."""
    text = recipe.path.read_text(encoding="utf-8")

    def installed(match: re.Match) -> str:
        path = str(PACKAGE / "sample_data" / match.group(1))
        return path if _PLAIN_SCALAR.fullmatch(path) else json.dumps(path)  # a JSON string is YAML

    text = _SAMPLE_PATH.sub(installed, text)
    if destination is not None:
        text = text.replace(f"recipes/{recipe.name}.yaml", str(destination))
    return text


def write_recipe(recipe: ShippedRecipe, destination: Path, overwrite: bool = False) -> Path:
    """Write the recipe to ``destination`` (a file, or a folder to put ``NAME.yaml`` in); an
    existing file is kept unless ``overwrite``. Returns the file written."""
    if destination.is_dir():
        destination = destination / f"{Path(recipe.name).name}.yaml"
    if destination.exists() and not overwrite:
        raise HFTransferError(f"{str(destination)!r} already exists; pass --overwrite to replace it, "
                              "or choose another --to")
    if not destination.parent.is_dir():
        raise HFTransferError(f"the folder of {str(destination)!r} does not exist; create it first")
    text = recipe_text(recipe, destination)
    staging = destination.with_name(f".{destination.name}.partial")
    try:
        staging.write_text(text, encoding="utf-8")
        os.replace(staging, destination)  # never a half-written recipe under the user's name
    except OSError as exc:
        staging.unlink(missing_ok=True)
        raise HFTransferError(f"cannot write {str(destination)!r} ({exc.strerror}); choose another --to") from None
    return destination
