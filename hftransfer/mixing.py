"""Multi-task batch mixing: single-task batches, the task of every step chosen by a schedule
(proportional, temperature, weighted or round robin), reproducible from (seed, epoch) so a
resumed run sees the batches an uninterrupted one would."""
from __future__ import annotations

import math

import numpy as np

SAMPLING = ("proportional", "temperature", "round_robin", "weighted")
"""How steps pick a task (``strategy.sampling`` of a multi-task recipe)."""


class TaskBatchSampler:
    """Single-task batches, mixed across tasks.

    An epoch has as many steps as one pass over every task's data takes; the sampling decides
    which task each step draws from: ``proportional`` (each task's data once per epoch, in a
    shuffled order), ``temperature`` (task t with probability ∝ n_t^(1/T), so small tasks are
    seen more often), ``weighted`` (∝ the given weights) or ``round_robin`` (in turn). A task's
    examples come in reshuffled passes, so a task drawn more often than its size allows repeats.
    With ``lengths``, every pass groups examples of similar length into batches (shuffled groups of
    50 batches sorted by length, as the Trainer's ``group_by_length``), which pads far less.

    Under several processes every step yields ``world_size`` batches of the same task in a row,
    one per process (Accelerate deals batch i to process i mod world_size), so all processes
    train the same head in a step.
    """

    MEGABATCH = 50  # batches whose examples are sorted by length together (as the Trainer does)

    def __init__(self, sizes: list[int], batch_size: int, probabilities: list[float] | None,
                 round_robin: bool, seed: int, world_size: int = 1,
                 lengths: list[list[int]] | None = None):
        self.lengths = lengths
        self.sizes = sizes
        self.batch_size = batch_size
        self.probabilities = probabilities
        self.round_robin = round_robin
        self.seed = seed
        self.world_size = max(1, world_size)
        self.epoch = 0
        self.starts = np.cumsum([0] + sizes).tolist()
        self.steps = sum(math.ceil(n / (batch_size * self.world_size)) for n in sizes)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps * self.world_size

    def schedule(self, rng: np.random.Generator) -> list[int]:
        """The task of every step of the epoch."""
        n = len(self.sizes)
        if self.round_robin:
            return [i % n for i in range(self.steps)]
        if self.probabilities is None:  # proportional: every task's share of one pass
            slots = [t for t, size in enumerate(self.sizes)
                     for _ in range(math.ceil(size / (self.batch_size * self.world_size)))]
            rng.shuffle(slots)
            return slots
        return rng.choice(n, size=self.steps, p=self.probabilities).tolist()

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        streams = [self._stream(t, rng) for t in range(len(self.sizes))]
        for task in self.schedule(rng):
            for _ in range(self.world_size):
                yield next(streams[task])

    def _stream(self, task: int, rng: np.random.Generator):
        """Endless batches of one task: reshuffled passes over its examples."""
        size, start = self.sizes[task], self.starts[task]
        batch = min(self.batch_size, size)
        buffer: list[int] = []
        while True:
            while len(buffer) < batch:
                buffer.extend((start + self._pass(task, rng)).tolist())
            yield buffer[:batch]
            del buffer[:batch]

    def _pass(self, task: int, rng: np.random.Generator) -> np.ndarray:
        """One shuffled pass over a task's examples (local indices)."""
        order = rng.permutation(self.sizes[task])
        if self.lengths is None:
            return order
        lengths = np.asarray(self.lengths[task])
        span = self.batch_size * self.MEGABATCH
        out = []
        for i in range(0, len(order), span):
            group = order[i:i + span]
            group = group[np.argsort(-lengths[group], kind="stable")]
            batches = [group[j:j + self.batch_size] for j in range(0, len(group), self.batch_size)]
            out.extend(batches[k] for k in rng.permutation(len(batches)))
        return np.concatenate(out)
