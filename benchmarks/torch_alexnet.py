"""The paper's two-tower AlexNet in PyTorch: the reference the JAX step is measured against.

Same architecture and parameter count (60,965,224) as `alexnet_jax.models.AlexNet` with the paper
config: the towers are `groups=2` convolutions, LRN is per tower with the paper's formula, dropout
0.5 after fc6 and fc7, SGD with momentum 0.9 and weight decay 5e-4. Needs requirements-torch.txt.
"""

import time

import torch
from torch import nn

MODES = ('eager', 'channels_last', 'compile')


class TowerLRN(nn.Module):
  """Paper §3.3 LRN within each tower. nn.LocalResponseNorm divides alpha by size, so it is given
  alpha * size to compute the paper's x / (k + alpha sum x_j^2)^beta."""

  def __init__(self, towers: int = 2, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
               k: float = 2.0):
    super().__init__()
    self.towers = towers
    self.norm = nn.LocalResponseNorm(size, alpha=alpha * size, beta=beta, k=k)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    # Each tower's channels as a separate sample, so the window never crosses the split.
    return self.norm(x.reshape(b * self.towers, c // self.towers, h, w)).reshape(b, c, h, w)


class AlexNet(nn.Module):

  def __init__(self, num_classes: int = 1000, dropout_rate: float = 0.5):
    super().__init__()
    self.features = nn.Sequential(
        nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(), TowerLRN(), nn.MaxPool2d(3, 2),
        nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(), TowerLRN(), nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2))
    self.classifier = nn.Sequential(
        nn.Linear(256 * 6 * 6, 4096), nn.ReLU(), nn.Dropout(dropout_rate),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(dropout_rate),
        nn.Linear(4096, num_classes))

  def forward(self, images_BCHW: torch.Tensor) -> torch.Tensor:
    return self.classifier(torch.flatten(self.features(images_BCHW), 1))


class TorchBenchmark:
  """A warm training step and inference step in one of MODES, timed on demand."""

  def __init__(self, mode: str, batch_size: int, warmup: int = 2, seed: int = 0):
    if mode not in MODES:
      raise ValueError(f'unknown mode {mode!r}; expected one of {MODES}')
    torch.manual_seed(seed)
    self.model = AlexNet()
    self.images = torch.randn(batch_size, 3, 227, 227)
    self.labels = torch.randint(0, 1000, (batch_size,))
    if mode == 'channels_last':
      self.model = self.model.to(memory_format=torch.channels_last)
      self.images = self.images.contiguous(memory_format=torch.channels_last)
    self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9,
                                     weight_decay=5e-4)
    self.parameter_count = sum(p.numel() for p in self.model.parameters())
    self.forward = torch.compile(self.model) if mode == 'compile' else self.model
    self.loss = nn.CrossEntropyLoss()
    start = time.perf_counter()
    self.train_step()  # Compiles in 'compile' mode.
    self.compile_seconds = time.perf_counter() - start
    self.infer_step()
    for _ in range(warmup):
      self.train_step()
      self.infer_step()

  def train_step(self) -> float:
    self.model.train()
    self.optimizer.zero_grad(set_to_none=True)
    loss = self.loss(self.forward(self.images), self.labels)
    loss.backward()
    self.optimizer.step()
    return loss.item()

  def infer_step(self) -> torch.Tensor:
    self.model.eval()
    with torch.inference_mode():
      return self.forward(self.images)

  def time_train(self, steps: int) -> float:
    return _median_seconds(self.train_step, steps)

  def time_infer(self, steps: int) -> float:
    return _median_seconds(self.infer_step, steps)


def _median_seconds(fn, steps: int) -> float:
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    fn()  # Synchronous on CPU.
    times.append(time.perf_counter() - start)
  return sorted(times)[len(times) // 2]


def parameter_count() -> int:
  return sum(p.numel() for p in AlexNet().parameters())
