"""The package's architecture holds: the import-linter layers, no package module imported inside a
function, no module grown past about 600 lines, built-ins found by name, a light CLI start-up, and
room for what comes next (a loss hook that sees the batch and the outputs, extra frozen models)."""
from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import hftransfer
from hftransfer.registry import BUILTIN_STRATEGIES, BUILTIN_TASKS, get_strategy, get_task, register_strategy

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "hftransfer"


def test_the_layers_contract_holds():
    done = subprocess.run([str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_no_package_module_is_imported_inside_a_function():
    # Heavy optional third-party libraries may load late; the package's own modules never do
    # (the registry and the package's doors load by name, through registry.load).
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    own = isinstance(inner, ast.ImportFrom) and (
                        inner.level > 0 or (inner.module or "").startswith("hftransfer"))
                    own |= isinstance(inner, ast.Import) and any(a.name.startswith("hftransfer") for a in inner.names)
                    if own:
                        found.append(f"{path.relative_to(REPO)}:{inner.lineno}")
    assert found == []


def test_no_module_is_over_600_lines():
    sizes = {str(p.relative_to(REPO)): len(p.read_text(encoding="utf-8").splitlines())
             for p in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 600} == {}


def test_builtin_names_load_the_module_that_registers_them():
    for name, module in BUILTIN_TASKS.items():
        assert get_task(name).__module__ == module and get_task(name).name == name
    for name, module in BUILTIN_STRATEGIES.items():
        assert get_strategy(name).__module__ == module and get_strategy(name).name == name


def test_the_cli_starts_without_the_deep_learning_stack():
    script = ("import sys, hftransfer, hftransfer.cli; hftransfer.cli.build_parser(); "
              "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'peft') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --------------------------------------------------------------------------- room for what comes next


@pytest.fixture
def teacher_strategy():
    """A strategy (registered for this test only) that trains with the source model as a frozen
    teacher and records what its loss hook saw."""
    from hftransfer.registry import STRATEGIES
    from hftransfer.strategies.base import ExtraModel
    from hftransfer.strategies.finetune import FullFineTune

    @register_strategy("test-teacher")
    class WithTeacher(FullFineTune):
        seen: list = []

        @dataclass
        class Options(FullFineTune.Options):
            teacher: str = ""

        def extra_models(self):
            return {"teacher": ExtraModel(hftransfer.recipe.ModelSpec(name_or_path=self.options.teacher))}

        def prepare(self, model):
            self.anchors, self.head = {}, []
            return model

        def extra_loss(self, model, inputs, outputs):
            teacher = self.extras["teacher"]
            with torch.no_grad():
                target = teacher(**{k: v for k, v in inputs.items() if k != "labels"}).logits
            self.seen.append((sorted(inputs), tuple(outputs.logits.shape), teacher.training))
            return ((outputs.logits - target) ** 2).mean() * 0.0 + outputs.logits.sum() * 0.0

    yield WithTeacher
    del STRATEGIES["test-teacher"]


def test_a_strategy_can_train_with_a_frozen_extra_model(teacher_strategy, tiny_recipe, tiny_model_dir,
                                                        tmp_path, monkeypatch):
    from transformers import AutoModelForSequenceClassification

    from hftransfer.trainer import TransferTrainer

    teacher_dir = tmp_path / "teacher"
    AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2).save_pretrained(teacher_dir)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(teacher_dir)
    optimized = {}
    original = TransferTrainer.create_optimizer

    def spy(self, model=None):
        optimizer = original(self, model)
        optimized["ids"] = {id(p) for group in optimizer.param_groups for p in group["params"]}
        optimized["teacher"] = {id(p) for p in self.strategy.extras["teacher"].parameters()}
        return optimizer

    monkeypatch.setattr(TransferTrainer, "create_optimizer", spy)
    recipe = tiny_recipe("test-teacher", strategy={"teacher": str(teacher_dir)}, train={"num_train_epochs": 1})
    result = hftransfer.train(recipe, output_dir=tmp_path / "run")
    # The hook saw the batch (with its labels) and the trained model's outputs; the teacher
    # stayed frozen in eval mode and out of the optimizer and the saved model.
    keys, shape, teacher_training = teacher_strategy.seen[0]
    assert "input_ids" in keys and "labels" in keys and shape[-1] == 2 and teacher_training is False
    assert optimized["ids"] and not optimized["ids"] & optimized["teacher"]
    from safetensors.torch import load_file

    saved = load_file(result.run_dir / "model.safetensors")
    teacher_size = sum(p.numel() for p in AutoModelForSequenceClassification.from_pretrained(teacher_dir).parameters())
    assert all(key.startswith(("bert.", "classifier.")) for key in saved)
    assert sum(t.numel() for t in saved.values()) < 2 * teacher_size  # one model saved, not two
