"""What is not training costs less: bf16 autocast of training steps on CPUs with native bf16, no
checkpoint at the last step, torch threads shared between the processes of a launch, a cheaper
dropout mask for heads on cached features."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from helpers import tiny_recipe_dict
from transformers import Trainer, TrainerControl

import hftransfer
from hftransfer import resources, trainer
from hftransfer.surgery import CpuFastDropout
from hftransfer.trainer import NoFinalCheckpoint, cpu_bf16_autocast


def test_bf16_autocast_only_where_the_cpu_has_it_and_the_recipe_is_silent(monkeypatch):
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: True)
    assert cpu_bf16_autocast({}) is True
    assert cpu_bf16_autocast({"bf16": False}) is False  # the opt-out
    assert cpu_bf16_autocast({"bf16": True}) is False  # the Trainer's own mixed precision
    assert cpu_bf16_autocast({"fp16": True}) is False
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: False)
    assert cpu_bf16_autocast({}) is False


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU takes train.bf16 as it is")
def test_bf16_on_a_machine_without_gpu_names_the_recipe_keys_that_fix_it(tmp_path):
    from hftransfer.errors import HFTransferError
    from hftransfer.recipe.training import make_training_arguments

    with pytest.raises(HFTransferError) as caught:
        make_training_arguments({"bf16": True}, str(tmp_path))
    message = str(caught.value)
    assert message.startswith("train.bf16: ") and "train.use_cpu: true" in message
    assert "assign use_cpu" not in message
    assert make_training_arguments({"bf16": True, "use_cpu": True}, str(tmp_path)).bf16


def test_training_steps_run_in_bf16_and_the_run_says_so(tmp_path, tiny_model_dir, toy_data, monkeypatch):
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: True)
    seen = []
    forward = torch.nn.Linear.forward

    def spy(self, x):
        out = forward(self, x)
        seen.append((torch.is_grad_enabled(), out.dtype))
        return out

    monkeypatch.setattr(torch.nn.Linear, "forward", spy)
    run = hftransfer.train(tiny_recipe_dict(tiny_model_dir, toy_data, train={"num_train_epochs": 1}),
                           output_dir=tmp_path / "bf16")
    assert run.metrics["train"]["precision"] == "bf16 autocast"
    training = {dtype for grad, dtype in seen if grad}
    evaluating = {dtype for grad, dtype in seen if not grad}
    assert training == {torch.bfloat16}
    assert evaluating == {torch.float32}  # metrics are those of the fp32 model predict loads
    saved = json.loads((tmp_path / "bf16" / "metrics.json").read_text())
    assert saved["train"]["precision"] == "bf16 autocast"
    seen.clear()
    run = hftransfer.train(tiny_recipe_dict(tiny_model_dir, toy_data, train={"num_train_epochs": 1, "bf16": False}),
                           output_dir=tmp_path / "fp32")
    assert run.metrics["train"]["precision"] == "fp32"
    assert {dtype for _, dtype in seen} == {torch.float32}


def _state(step: int, best: float | None = None):
    return SimpleNamespace(global_step=step, max_steps=10, best_metric=best, best_model_checkpoint="ckpt-5")


def _args(load_best: bool = True):
    return SimpleNamespace(load_best_model_at_end=load_best, metric_for_best_model="accuracy", greater_is_better=True)


def test_no_checkpoint_is_written_at_the_last_step():
    callback, control = NoFinalCheckpoint(), TrainerControl(should_save=True)
    callback.on_step_end(_args(), _state(5), control)
    assert control.should_save  # earlier checkpoints stay (resume, best model)
    callback.on_epoch_end(_args(), _state(10), control)
    assert not control.should_save


def test_the_best_model_stays_right_without_the_last_checkpoint():
    callback = NoFinalCheckpoint()
    state = _state(10, best=0.8)
    callback.on_evaluate(_args(), state, TrainerControl(), metrics={"eval_accuracy": 0.7})
    assert state.best_model_checkpoint == "ckpt-5"  # an earlier one is best: it is reloaded
    callback.on_evaluate(_args(), state, TrainerControl(), metrics={"eval_accuracy": 0.9})
    assert state.best_model_checkpoint is None  # the last is best: the weights in memory are it
    state = _state(5, best=0.8)
    callback.on_evaluate(_args(), state, TrainerControl(), metrics={"eval_accuracy": 0.9})
    assert state.best_model_checkpoint == "ckpt-5"  # not the last step: the Trainer decides


@pytest.mark.parametrize("keep", [False, True])
def test_a_run_writes_checkpoints_only_before_its_last_step(tmp_path, tiny_model_dir, toy_data, monkeypatch, keep):
    saved = []
    original = Trainer._save_checkpoint

    def counting(self, model, trial):
        saved.append(self.state.global_step)
        return original(self, model, trial)

    monkeypatch.setattr(Trainer, "_save_checkpoint", counting)
    recipe = tiny_recipe_dict(tiny_model_dir, toy_data, train={
        "num_train_epochs": 3, "save_strategy": "epoch", "eval_strategy": "epoch",
        "load_best_model_at_end": True, "metric_for_best_model": "accuracy"})
    run = hftransfer.train(recipe, output_dir=tmp_path / "run", keep_checkpoints=keep)
    steps = run.metrics["train"]["steps"]
    assert len(saved) == (3 if keep else 2) and steps not in saved[:2]
    assert (steps in saved) == keep
    # The model saved is the best one on validation, whichever epoch it came from.
    history = json.loads((tmp_path / "run" / "logs" / "log_history.json").read_text())
    best = max(entry["eval_accuracy"] for entry in history if "eval_accuracy" in entry)
    assert run.metrics["validation"]["accuracy"] == pytest.approx(best)


def test_processes_of_a_launch_share_the_cores(monkeypatch):
    threads = torch.get_num_threads()
    try:
        monkeypatch.setattr(resources, "_CORES", 8)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        if not torch.cuda.is_available():  # GPU processes keep torch's default
            assert resources.share_cpu_cores() == 4
            monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
            assert resources.share_cpu_cores() == 1
        torch.set_num_threads(3)
        monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's (or the launcher's) choice wins
        assert resources.share_cpu_cores() == 3
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_the_cpu_dropout_drops_p_of_the_elements_and_keeps_the_expectation(p):
    torch.manual_seed(0)
    x = torch.ones(1000, 1000, requires_grad=True)
    y = CpuFastDropout(p)(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 0.003  # 10^6 draws: the binomial spread is below 0.0005
    assert abs(y.mean().item() - 1) < 0.005
    # The gradient flows through the kept elements only, scaled like them.
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())


def test_the_cpu_dropout_repeats_under_a_seed_keeps_dtype_and_is_off_in_eval():
    dropout = CpuFastDropout(0.1)
    torch.manual_seed(3)
    first = dropout(torch.ones(7, 5))  # an element count that is not a multiple of 4
    torch.manual_seed(3)
    assert torch.equal(first, dropout(torch.ones(7, 5)))
    assert not torch.equal(first, dropout(torch.ones(7, 5)))  # the generator moved on
    assert dropout(torch.ones(4, 4, dtype=torch.bfloat16)).dtype == torch.bfloat16
    assert torch.equal(CpuFastDropout(1.0)(torch.ones(3)), torch.zeros(3))
    dropout.eval()
    x = torch.randn(4, 4)
    assert torch.equal(dropout(x), x)
