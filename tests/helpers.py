"""Assertions shared by the bad-input tests: one-line errors, exit code 2, nothing written."""
from __future__ import annotations

from pathlib import Path

import pytest

from hftransfer.cli import main
from hftransfer.errors import HFTransferError


def tiny_recipe_dict(model_dir: str | Path, toy_data: Path, strategy_name: str = "full",
                     **sections) -> dict:
    """A recipe mapping that trains the tiny model on the toy data in seconds; mapping
    ``sections`` are merged into the defaults, other values replace them."""
    recipe = {
        "name": f"tiny-{strategy_name}",
        "model": {"name_or_path": str(model_dir)},
        "task": {"type": "text-classification"},
        "data": {"train": str(toy_data / "train.csv"),
                 "validation": str(toy_data / "validation.csv"),
                 "test": str(toy_data / "test.csv")},
        "strategy": {"name": strategy_name},
        "train": {"num_train_epochs": 2, "per_device_train_batch_size": 16,
                  "learning_rate": 1e-3, "save_strategy": "no", "disable_tqdm": True},
    }
    for key, value in sections.items():
        recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
    return recipe


def user_error(*needles: str, call, **kwargs) -> str:
    """Run ``call``; it must raise HFTransferError whose single-line message holds every needle."""
    with pytest.raises(HFTransferError) as info:
        call(**kwargs) if kwargs else call()
    message = str(info.value)
    assert "\n" not in message.strip(), f"error message is not one line: {message!r}"
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """``hftransfer ARGV`` in-process: (exit code, stdout, stderr)."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse errors exit through SystemExit(2)
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def assert_cli_error(rc: int, err: str, *needles: str) -> str:
    """Exit 2, no traceback, and stderr is exactly one ``error:`` line holding every needle."""
    assert "Traceback" not in err, err
    assert rc == 2, f"exit code {rc}, stderr: {err!r}"
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], f"expected one final error line: {lines!r}"
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"
    assert lines == errors, f"stderr must hold only the error line; before it came {lines[:-1]!r}"
    return errors[0]


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its bytes: equal trees mean nothing was written or removed."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}
