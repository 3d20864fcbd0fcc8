"""The class-incremental protocol: seeded class split, per-task real data, metrics.

Classes are relabelled in task order, so task t owns the contiguous label range
[first(t), last(t)) and "the classes seen so far" are always labels [0, seen).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from ..data.datasets import ImageTensors


def split_classes(num_classes: int, tasks: int, seed: int) -> list[list[int]]:
    """A seeded random order of the classes cut into `tasks` near-equal consecutive groups."""
    if not 1 <= tasks <= num_classes:
        raise ValueError(f"--tasks must be between 1 and the {num_classes} classes, got {tasks}")
    order = torch.randperm(num_classes, generator=torch.Generator().manual_seed(seed)).tolist()
    bounds = [round(i * num_classes / tasks) for i in range(tasks + 1)]
    return [order[bounds[i]:bounds[i + 1]] for i in range(tasks)]


class TaskStream:
    """Real images relabelled in task order, handed out one task at a time.

    `batches(t)` yields only task t's images; `batches(t, include_past=True)` (the joint
    upper bound) yields every class seen up to t. Each batch is checked: a real image of a
    past task after its task raises AssertionError (also under `python -O`).
    """

    def __init__(self, data: ImageTensors, split: Sequence[Sequence[int]]) -> None:
        self.split = [list(s) for s in split]
        order = [c for task in self.split for c in task]
        num = max(int(data.labels.max()) + 1, max(order) + 1)
        remap = torch.full((num,), -1, dtype=torch.long)
        remap[torch.tensor(order)] = torch.arange(len(order))
        labels = remap[data.labels]
        keep = labels >= 0
        self.images, self.labels = data.images[keep], labels[keep]
        sizes = [len(s) for s in self.split]
        self.bounds = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
        self.current_task = 0
        self.labels_served: list[set[int]] = [set() for _ in self.split]

    @property
    def num_tasks(self) -> int:
        return len(self.split)

    def first(self, task: int) -> int:
        """First (relabelled) class of `task`."""
        return self.bounds[task]

    def seen(self, task: int) -> int:
        """Number of classes seen once `task` is learned."""
        return self.bounds[task + 1]

    def task_indices(self, task: int, include_past: bool = False) -> torch.Tensor:
        """Indices of the real images of `task` (and of every earlier task if `include_past`)."""
        lo = 0 if include_past else self.first(task)
        return ((self.labels >= lo) & (self.labels < self.seen(task))).nonzero().flatten()

    def subset(self, task: int, include_past: bool = False) -> ImageTensors:
        """The images of `task` (and earlier tasks if `include_past`) as an ImageTensors."""
        idx = self.task_indices(task, include_past)
        return ImageTensors(self.images[idx], self.labels[idx])

    def start_task(self, task: int) -> None:
        """Move the stream to `task`; tasks only go forward."""
        if task < self.current_task:
            raise AssertionError(f"task {task} requested after task {self.current_task}")
        self.current_task = task

    def check_batch(self, labels: torch.Tensor, include_past: bool = False) -> None:
        """Raise AssertionError if a real batch holds a class of a past task (or a future one)."""
        lo = 0 if include_past else self.first(self.current_task)
        hi = self.seen(self.current_task)
        if labels.numel() and (int(labels.min()) < lo or int(labels.max()) >= hi):
            raise AssertionError(f"real batch with classes outside [{lo}, {hi}) during task "
                                 f"{self.current_task}: a past task's real data leaked")
        self.labels_served[self.current_task].update(labels.unique().tolist())

    def batches(self, task: int, batch_size: int, steps: int, generator: torch.Generator,
                include_past: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """`steps` shuffled batches (uint8 images, labels) of the current task's real data."""
        batches = TaskBatches(self, task, batch_size, generator, include_past)
        for _ in range(steps):
            yield batches.next()


class TaskBatches:
    """Shuffled batches of one task's real images, reshuffled whenever the task runs out.

    Its position (the permutation and the offset in it) is part of a checkpoint, so that a
    task resumed mid-way draws the same batches as one that never stopped.
    """

    def __init__(self, stream: TaskStream, task: int, batch_size: int,
                 generator: torch.Generator, include_past: bool = False) -> None:
        self.stream, self.task, self.batch_size = stream, task, batch_size
        self.generator, self.include_past = generator, include_past
        self.perm: torch.Tensor | None = None
        self.pos = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch (uint8 images, labels), checked against the protocol."""
        stream = self.stream
        if self.perm is None:
            stream.start_task(self.task)
            self._shuffle()
        if self.pos + self.batch_size > len(self.perm):
            self._shuffle()
        take = self.perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        y = stream.labels[take]
        stream.check_batch(y, self.include_past)
        return stream.images[take], y

    def _shuffle(self) -> None:
        idx = self.stream.task_indices(self.task, self.include_past)
        self.perm = idx[torch.randperm(len(idx), generator=self.generator)]
        self.pos = 0

    def state_dict(self) -> dict:
        return {"perm": self.perm, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.perm, self.pos = state["perm"], state["pos"]
        if self.perm is not None:
            self.stream.start_task(self.task)


def relabel(data: ImageTensors, split: Sequence[Sequence[int]]) -> ImageTensors:
    """The split's images with labels in task order (classes outside the split dropped)."""
    stream = TaskStream(data, split)
    return ImageTensors(stream.images, stream.labels)


@torch.no_grad()
def accuracy_row(model: torch.nn.Module, test: ImageTensors, bounds: Sequence[int], task: int,
                 normalize: torch.nn.Module, batch_size: int = 1000) -> tuple[list[float], float]:
    """After `task`: accuracy (%) on each seen task's test images, and on all seen classes.

    Predictions are the argmax over every class seen so far (no task identity given).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    seen = bounds[task + 1]
    mask = test.labels < seen
    images, labels = test.images[mask], test.labels[mask]
    preds = []
    for i in range(0, len(labels), batch_size):
        x = images[i:i + batch_size].to(device).float().div_(255)
        preds.append(model(normalize(x))[:, :seen].argmax(1).cpu())
    model.train(was_training)
    pred = torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)
    correct = pred == labels
    row = []
    for j in range(task + 1):
        sel = (labels >= bounds[j]) & (labels < bounds[j + 1])
        row.append(100.0 * float(correct[sel].float().mean()) if sel.any() else 0.0)
    return row, 100.0 * float(correct.float().mean()) if len(labels) else 0.0


def incremental_metrics(acc_matrix: Sequence[Sequence[float | None]],
                        acc_seen: Sequence[float] | None = None) -> dict[str, float]:
    """Final accuracy, average incremental accuracy and average forgetting from a matrix.

    `acc_matrix[i][j]` is the accuracy after task i on task j (j <= i). `acc_seen[i]`
    (accuracy on all classes seen after task i) defaults to the mean of row i.
    Forgetting averages, over every task but the last, the drop from its best earlier
    accuracy to its final one (0 for a single task).
    """
    t = len(acc_matrix)
    if acc_seen is None:
        acc_seen = [sum(acc_matrix[i][:i + 1]) / (i + 1) for i in range(t)]
    forgetting = [max(acc_matrix[i][j] for i in range(j, t - 1)) - acc_matrix[t - 1][j]
                  for j in range(t - 1)]
    return {"final_acc": float(acc_seen[-1]),
            "avg_inc_acc": float(sum(acc_seen) / t),
            "forgetting": float(sum(forgetting) / len(forgetting)) if forgetting else 0.0}
