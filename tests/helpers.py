"""Helpers shared by the tests: tiny recipes, one-line error assertions (exit code 2, nothing
written), runs of plain transformers in a process that never imports the kit, and HTTP servers
on the loopback interface (fake Hubs)."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

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


def mark_as_kit_made(folder: Path, state: str, files: list[str] | None = None) -> None:
    """Give a hand-made folder the marker the kit writes into the run folders it makes."""
    from hftransfer import rundir

    rundir.write_json(folder / rundir.MARKER, {"made_by": "hftransfer", "state": state,
                                               "files": files or [], "record": {}})


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its bytes: equal trees mean nothing was written or removed."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def run_without_the_kit(script: str, cwd: Path) -> Any:
    """Run ``script`` in a fresh, offline Python with no inherited environment; it must not
    import hftransfer. Returns the JSON it prints last."""
    check = "\nimport sys as _sys\nassert not [m for m in _sys.modules if m.startswith('hftransfer')]\n"
    done = subprocess.run([sys.executable, "-c", script + check], capture_output=True, text=True,
                          cwd=cwd, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_same_predictions(plain: list[dict], kit: list[dict], where: str = "") -> None:
    """Labels equal and probabilities within 1e-4: plain transformers vs ``hftransfer predict``."""
    assert [r["label"] for r in plain] == [r["label"] for r in kit], where
    for a, b in zip(plain, kit):
        assert abs(a["score"] - b["score"]) < 1e-4, where


def refused(capsys, root: Path, argv: list, *needles: str) -> str:
    """The command fails with one error line naming ``needles``, and ``root`` is unchanged."""
    capsys.readouterr()  # what earlier calls printed
    before = tree(root)
    rc, out, err = run_cli(capsys, *argv)
    line = assert_cli_error(rc, err, *needles)
    assert out == ""
    assert tree(root) == before, "the failed command wrote or removed files"
    return line


@contextmanager
def loopback_server(handler: type) -> Iterator[str]:
    """Serve ``handler`` on 127.0.0.1 (a port the OS picks) in a thread; yields the base URL.
    On exit the server is shut down and its thread has ended."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        assert not thread.is_alive()
