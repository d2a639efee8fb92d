"""Training loop: AdamW with a one-cycle schedule, channels_last, deterministic on CPU."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mnist_xai.data import normalize
from mnist_xai.errors import ParamError
from mnist_xai.model import commuted
from mnist_xai.stage import follow_running_stages

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    history: list[dict[str, float]]  # one row per epoch
    train_seconds: float  # the optimisation loop alone, without the per-epoch test evaluation


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ParamError("base.device='cuda' is not allowed here: no CUDA device is available; set base.device "
                         "to auto or cpu")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    # torch.use_deterministic_algorithms(True, warn_only=True) sets this same flag, but first imports
    # torch._inductor (1.2 s in a fresh process here) only to set a flag of its compiler, which nothing here uses
    torch._C._set_deterministic_algorithms(True, warn_only=True)


@torch.inference_mode()
def evaluate_batches(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000
                     ) -> tuple[float, torch.Tensor]:
    """Mean cross-entropy and the predicted class of every input."""
    model.eval()
    fast = commuted(model)
    total_loss, predictions = 0.0, []
    for start in range(0, len(inputs), batch_size):
        logits = fast(inputs[start:start + batch_size])
        total_loss += F.cross_entropy(logits, labels[start:start + batch_size], reduction="sum").item()
        predictions.append(logits.argmax(1))
    return total_loss / len(inputs), torch.cat(predictions)


def train(model: nn.Module, train_images: np.ndarray, train_labels: np.ndarray,
          test_images: np.ndarray, test_labels: np.ndarray, *, epochs: int, batch_size: int, lr: float,
          weight_decay: float, seed: int, device: torch.device,
          on_epoch: Callable[[dict[str, float]], None] | None = None) -> TrainResult:
    """Train `model` in place; evaluate on the test split after every epoch for the curves."""
    seed_everything(seed)
    model.to(device=device, memory_format=torch.channels_last)  # ~2.8x faster convolutions on CPU
    x_train = normalize(train_images).to(device).contiguous(memory_format=torch.channels_last)
    y_train = torch.as_tensor(train_labels).to(device)
    x_test = normalize(test_images).to(device).contiguous(memory_format=torch.channels_last)
    y_test = torch.as_tensor(test_labels).to(device)

    steps_per_epoch = (len(x_train) + batch_size - 1) // batch_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    shuffle = torch.Generator().manual_seed(seed)

    fast = commuted(model)  # the same function and gradients, with ReLUs on pooled (4x smaller) maps
    history, train_seconds = [], 0.0
    with tqdm(total=epochs * steps_per_epoch, desc="train", unit="batch", mininterval=1.0) as progress:
        for epoch in range(1, epochs + 1):
            started = time.perf_counter()
            model.train()
            order = torch.randperm(len(x_train), generator=shuffle).to(device)
            loss_sum = correct = 0.0
            for start in range(0, len(x_train), batch_size):
                batch = order[start:start + batch_size]
                logits = fast(x_train[batch])
                loss = F.cross_entropy(logits, y_train[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                loss_sum += loss.item() * len(batch)
                correct += (logits.argmax(1) == y_train[batch]).sum().item()
                progress.update()
                follow_running_stages()  # another stage may have started, or ended
            train_seconds += time.perf_counter() - started
            test_loss, predictions = evaluate_batches(model, x_test, y_test)
            row = {
                "epoch": epoch,
                "train_loss": round(loss_sum / len(x_train), 6),
                "train_accuracy": round(correct / len(x_train), 6),
                "test_loss": round(test_loss, 6),
                "test_accuracy": round((predictions == y_test).float().mean().item(), 6),
            }
            history.append(row)
            progress.set_postfix(loss=row["train_loss"], test_acc=row["test_accuracy"])
            log.info("epoch %d: %s", epoch, row)
            if on_epoch:
                on_epoch(row)
    model.eval()
    return TrainResult(history=history, train_seconds=train_seconds)

