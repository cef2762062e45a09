"""The grid of a comparison: arms (a strategy, or a source model, or both) × label budgets ×
seeds, each cell's recipe, and every check of the user's input before the first cell trains.

Every cell of one (budget, seed) sees the same data: the same validation split, and the same
``budget`` examples of each label (``data.samples_per_label``, drawn without replacement with
``data.seed`` = the seed), so the arms differ only in how they transfer.
"""
from __future__ import annotations

import copy
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import engine
from ..errors import HFTransferError
from ..recipe import Recipe, apply_overrides, load_recipe, model_set
from ..recipe.stages import is_staged
from ..registry import get_strategy

BASELINE = "scratch"
"""The arm every other arm is measured against: the same network, randomly initialised."""
ALL = "all"
"""The label budget that keeps the whole training set."""
DEFAULT_MIN_STEPS = 50
# Settings that pick the best checkpoint: meaningless for a strategy that keeps no checkpoints.
_SELECTION = ("load_best_model_at_end", "metric_for_best_model", "greater_is_better", "save_total_limit",
              "save_steps")
_ARM_OVERRIDE = re.compile(r"^([^=:]+):([^=]+=.*)$", re.S)


@dataclass(frozen=True)
class Arm:
    """One line of the comparison: a strategy from a source model."""

    name: str
    strategy: str
    source: dict[str, Any] | None = None
    """The model section to transfer from (None: the recipe's ``model:``)."""
    source_name: str | None = None
    """What the user called that source (``--sources``)."""

    @property
    def folder(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", self.name).strip("-.") or "arm"


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    arm: Arm
    budget: int | None
    """Training examples per label (None: all of them)."""
    seed: int

    @property
    def key(self) -> str:
        """The cell's folder inside the comparison (``cells/lora/16/seed-0``), also its id."""
        return f"cells/{self.arm.folder}/{ALL if self.budget is None else self.budget}/seed-{self.seed}"

    def describe(self) -> str:
        return f"{self.arm.name}, {ALL if self.budget is None else self.budget} per label, seed {self.seed}"


@dataclass
class Grid:
    """A checked comparison: what to train, and how each cell's recipe is made."""

    recipe: Recipe
    arms: list[Arm]
    budgets: list[int | None]
    seeds: list[int]
    min_steps: int
    arm_recipes: dict[str, dict[str, Any]]
    """Each arm's recipe before the cell's budget and seed."""
    setups: dict[str, engine.Setup]
    """Each arm checked on the whole training set (its effective training arguments)."""
    class_counts: dict[str, int]
    overrides: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def baseline(self) -> str | None:
        return BASELINE if any(a.name == BASELINE for a in self.arms) else None

    def cells(self) -> list[Cell]:
        """Seed by seed (a comparison stopped early holds whole seeds), the baseline first."""
        return [Cell(arm, budget, seed) for seed in self.seeds for budget in self.budgets for arm in self.arms]

    def n_train(self, budget: int | None) -> int:
        if budget is None:
            return sum(self.class_counts.values())
        return budget * len(self.class_counts)

    def cell_recipe(self, cell: Cell) -> dict[str, Any]:
        """The recipe a cell trains: its arm's, with the budget, the seed, and a schedule of at
        least ``min_steps`` optimizer steps."""
        data = copy.deepcopy(self.arm_recipes[cell.arm.name])
        data["name"] = f"{self.recipe.name}-{cell.key.removeprefix('cells/').replace('/', '-')}"
        data.setdefault("data", {})["samples_per_label"] = cell.budget
        data["data"]["seed"] = cell.seed
        train = data.setdefault("train", {})
        train["seed"] = cell.seed
        train.update(schedule(self.setups[cell.arm.name].values, self.n_train(cell.budget), self.min_steps))
        # A cell that stops is trained again from its start, never resumed: checkpoints need
        # the model only (no optimizer state), which saves a third of the disk and the time.
        train.setdefault("save_only_model", True)
        return data

    def identity(self) -> dict[str, Any]:
        """What a comparison directory must have been made with to take more cells."""
        recipe = self.recipe.to_dict()
        recipe.pop("name", None)
        return {"recipe": recipe, "overrides": self.overrides, "min_steps": self.min_steps}


def schedule(values: dict[str, Any], n_train: int, min_steps: int) -> dict[str, Any]:
    """Training-argument changes that give a cell at least ``min_steps`` optimizer steps: a
    small budget repeats its examples for more steps, and still evaluates (and keeps
    checkpoints) as often as the recipe's epochs say, evenly spaced, the last at the end."""
    if min_steps <= 0 or int(values.get("max_steps") or -1) > 0:
        return {}
    batch = int(values.get("per_device_train_batch_size", 8)) * int(values.get("gradient_accumulation_steps", 1))
    per_epoch = math.ceil(n_train / max(batch, 1))
    epochs = float(values.get("num_train_epochs", 3))
    if math.ceil(per_epoch * epochs) >= min_steps:
        return {}
    evaluations = max(1, round(epochs))
    every = math.ceil(min_steps / evaluations)
    out: dict[str, Any] = {"max_steps": every * evaluations}
    for kind in ("eval", "save"):
        if str(values.get(f"{kind}_strategy", "no")).lower().endswith("epoch"):
            out[f"{kind}_strategy"], out[f"{kind}_steps"] = "steps", every
    return out


def parse_budgets(text: str | list[Any]) -> list[int | None]:
    """``"16,64,all"`` -> ``[16, 64, None]`` (sorted, the whole training set last)."""
    items = [str(i).strip() for i in (text.split(",") if isinstance(text, str) else text)]
    budgets: set[int | None] = set()
    for item in items:
        if not item:
            continue
        if item.lower() == ALL:
            budgets.add(None)
            continue
        try:
            value = int(item)
        except ValueError:
            raise HFTransferError(
                f"--label-budgets: {item[:30]!r} is not a number of examples per label; give e.g. "
                "16,64,all") from None
        if value <= 0:
            raise HFTransferError(
                f"--label-budgets: {value} examples per label leaves every class with zero examples; "
                "give budgets of 1 or more (or all)")
        budgets.add(value)
    if not budgets:
        raise HFTransferError("--label-budgets is empty; give e.g. 16,64,all")
    return sorted(budgets, key=lambda b: math.inf if b is None else b)


def _names(text: str | list[str] | None, what: str) -> list[str]:
    if text is None:
        return []
    items = [s.strip() for s in (text.split(",") if isinstance(text, str) else text)]
    if not all(items):
        raise HFTransferError(f"{what} has an empty entry; give a comma-separated list")
    return list(dict.fromkeys(items))


def build_grid(source: str | Path | dict | Recipe, *, strategies: str | list[str] | None = None,
               sources: str | list[str] | None = None, budgets: str | list[Any] = ALL, seeds: int = 3,
               scratch: bool = True, min_steps: int = DEFAULT_MIN_STEPS,
               overrides: list[str] | None = None) -> Grid:
    """Check everything a comparison names — the recipe, each arm against its source model and
    the data, the budgets against the classes — and return its grid. Nothing is written."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise HFTransferError(f"--seeds must be a whole number of 1 or more, got {seeds!r}")
    if isinstance(min_steps, bool) or not isinstance(min_steps, int) or min_steps < 0:
        raise HFTransferError(f"--min-steps must be a whole number of 0 or more, got {min_steps!r}")
    if is_staged(source):
        raise HFTransferError("compare takes a recipe of one run; this one is staged (stages:): compare "
                              "the recipe of the stage you want to study")
    every, per_arm = _split_overrides(overrides or [])
    recipe = load_recipe(source, every)
    if recipe.is_multitask:
        raise HFTransferError("compare takes a single-task recipe (task: and data:); this one has tasks:")
    names = _names(strategies, "--strategies") or [recipe.strategy_name]
    for name in names:
        if get_strategy(name, "--strategies").name == "multitask":
            raise HFTransferError("--strategies: multitask needs a recipe with tasks:; compare the others")
    models = model_set(sources, "--sources") if sources else {}
    arms = _arms([n for n in names if n != BASELINE], models)
    if scratch or BASELINE in names:
        arms.insert(0, Arm(BASELINE, BASELINE))
    unknown = sorted(set(per_arm) - {a.name for a in arms} - {a.strategy for a in arms} - set(models))
    if unknown:
        raise HFTransferError(
            f"override for {unknown[0]!r}: no arm of this comparison is called so; arms: "
            f"{', '.join(a.name for a in arms)} (ARM:key.path=value)")
    grid = Grid(recipe=recipe, arms=arms, budgets=parse_budgets(budgets), seeds=list(range(seeds)),
                min_steps=min_steps, arm_recipes={}, setups={}, class_counts={},
                overrides=list(overrides or []))
    for arm in arms:
        mine = [o for key in (arm.name, arm.strategy, arm.source_name) if key for o in per_arm.get(key, [])]
        grid.arm_recipes[arm.name] = _arm_recipe(recipe, arm, list(dict.fromkeys(mine)), grid.notes)
        checked = dict(grid.arm_recipes[arm.name])
        checked["data"] = {**checked["data"], "samples_per_label": None, "seed": 0}
        try:
            grid.setups[arm.name] = engine.check(checked)
        except HFTransferError as exc:
            raise HFTransferError(f"arm {arm.name}: {exc}") from None
    first = grid.setups[arms[0].name]
    grid.class_counts = _class_counts(first)
    _check_budgets(grid, first)
    return grid


def _split_overrides(overrides: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """``key=value`` applies to every cell; ``ARM:key=value`` to one arm (its name, strategy or source)."""
    every, per_arm = [], {}
    for item in overrides:
        match = _ARM_OVERRIDE.match(item) if isinstance(item, str) else None
        if match and "=" not in match.group(1):
            per_arm.setdefault(match.group(1).strip(), []).append(match.group(2))
        else:
            every.append(item)
    return every, per_arm


def _arms(strategies: list[str], sources: dict[str, dict[str, Any]]) -> list[Arm]:
    if not sources:
        return [Arm(s, s) for s in strategies]
    if len(strategies) == 1:
        return [Arm(name, strategies[0], model, name) for name, model in sources.items()]
    return [Arm(f"{s}@{name}", s, model, name) for s in strategies for name, model in sources.items()]


def _arm_recipe(recipe: Recipe, arm: Arm, overrides: list[str], notes: list[str]) -> dict[str, Any]:
    """The recipe's own strategy section and training settings where the arm is its strategy;
    for another strategy, its defaults win over the recipe's settings that were made for a
    strategy with other defaults (a learning rate for full fine-tuning is not one for LoRA)."""
    data = recipe.to_dict()
    data.pop("name", None)
    if arm.source is not None:
        data["model"] = dict(arm.source)
    if arm.strategy != recipe.strategy_name:
        data["strategy"] = {"name": arm.strategy}
        mine = get_strategy(arm.strategy).defaults
        theirs = get_strategy(recipe.strategy_name).defaults
        train = dict(data.get("train") or {})
        dropped = [k for k in train if k in mine and mine[k] != theirs.get(k)]
        if mine.get("save_strategy") == "no":  # keeps no checkpoints: nothing to select among
            dropped += [k for k in train if k in _SELECTION and k not in dropped]
        for key in dropped:
            train.pop(key)
        data["train"] = train
        if dropped:
            notes.append(f"{arm.name}: {', '.join(f'train.{k}' for k in dropped)} of the recipe (set for "
                         f"{recipe.strategy_name}) not used; {arm.strategy}'s defaults instead (set them "
                         f"with {arm.name}:train.KEY=VALUE)")
    if overrides:
        data = apply_overrides(data, overrides)
        notes.append(f"{arm.name}: {' '.join(overrides)}")
    return data


def _class_counts(setup: engine.Setup) -> dict[str, int]:
    keys = setup.task.stratify_keys(setup.splits.train)
    if keys is None:
        return {}
    return {str(k): n for k, n in sorted(Counter(keys).items(), key=lambda kv: str(kv[0]))}


def _check_budgets(grid: Grid, setup: engine.Setup) -> None:
    sized = [b for b in grid.budgets if b is not None]
    if not sized:
        if not grid.class_counts:
            grid.class_counts = {"": len(setup.splits.train)}
        return
    if not grid.class_counts:
        raise HFTransferError(
            f"--label-budgets: examples per label apply to tasks with one label per example; task "
            f"{setup.task.name} has none: compare it with --label-budgets all")
    label, fewest = min(grid.class_counts.items(), key=lambda kv: kv[1])
    if max(sized) > fewest:
        raise HFTransferError(
            f"--label-budgets: {max(sized)} examples per label is more than class {label!r} has ({fewest} "
            f"training examples); the largest budget this data allows is {fewest} (or all)")
