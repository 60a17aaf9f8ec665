"""The cross-device collectives of a compiled step, read from its HLO text.

Used by the tests (communication happens only where the paper's GPUs talked) and by
tools/parallel_report.py (bytes communicated per step). The HLO is the per-device SPMD program, so
sizes are per device.
"""

import dataclasses
import math
import re

import numpy as np

KINDS = ('all-gather', 'all-reduce', 'reduce-scatter', 'collective-permute', 'all-to-all')
_DTYPE_BYTES = {'f64': 8, 'f32': 4, 'bf16': 2, 'f16': 2, 's64': 8, 's32': 4, 'u32': 4, 's8': 1,
                'u8': 1, 'pred': 1}
_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%\S+ = (.+?) (' + '|'.join(KINDS) + r')(?:-start)?\(')
_ARRAY = re.compile(r'(\w+)\[([\d,]*)\]')


@dataclasses.dataclass(frozen=True)
class Collective:
  kind: str
  shapes: tuple[tuple[str, tuple[int, ...]], ...]  # (dtype, shape) of each result.
  groups: tuple[tuple[int, ...], ...]  # Device groups that communicate (logical device ids).
  op_name: str  # JAX name stack of the op that caused it.

  @property
  def result_bytes(self) -> int:
    return sum(_DTYPE_BYTES[dtype] * math.prod(shape) for dtype, shape in self.shapes)

  @property
  def operand_bytes(self) -> int:
    """Bytes each device puts in: a gather's input is 1/n of its result, a scatter's n times."""
    n = len(self.groups[0]) if self.groups else 1
    if n == 1:  # A reduction over a size-1 mesh axis: XLA keeps the op, but nothing moves.
      return 0
    if self.kind == 'all-gather':
      return self.result_bytes // n
    if self.kind == 'reduce-scatter':
      return self.result_bytes * n
    return self.result_bytes

  @property
  def exchanges_activations(self) -> bool:
    """True at the towers' communication points (the model's named scopes), in either pass."""
    return 'cross_tower_' in self.op_name or 'hybrid_batch_gather' in self.op_name

  @property
  def forward(self) -> bool:
    """False for ops of the backward pass (JAX names them transpose(...))."""
    return 'transpose(' not in self.op_name


def _parse_groups(line: str, num_devices: int) -> tuple[tuple[int, ...], ...]:
  explicit = re.search(r'replica_groups=\{(\{[\d,]*\}(?:,\{[\d,]*\})*)\}', line)
  if explicit:
    return tuple(tuple(int(i) for i in g.split(',') if i)
                 for g in re.findall(r'\{([\d,]*)\}', explicit.group(1)))
  # Newer form: replica_groups=mesh['axis_0'=2,'axis_1'=2] {'axis_0'} (the axes that talk).
  mesh = re.search(r"replica_groups=mesh\[([^\]]*)\] \{([^}]*)\}", line)
  if mesh:
    axes = re.findall(r"'(\w+)'=(\d+)", mesh.group(1))
    names = [name for name, _ in axes]
    talking = [names.index(a) for a in re.findall(r"'(\w+)'", mesh.group(2))]
    ids = np.arange(math.prod(int(size) for _, size in axes)).reshape([int(s) for _, s in axes])
    rest = [i for i in range(len(names)) if i not in talking]
    ids = ids.transpose(rest + talking).reshape(-1, math.prod(ids.shape[i] for i in talking))
    return tuple(tuple(int(i) for i in g) for g in ids)
  iota = re.search(r'replica_groups=\[(\d+),(\d+)\]<=\[(\d+)\]', line)
  if iota:
    count, size, _ = map(int, iota.groups())
    return tuple(tuple(range(g * size, (g + 1) * size)) for g in range(count))
  return (tuple(range(num_devices)),)  # No groups: every device.


def collectives(hlo_text: str, num_devices: int) -> list[Collective]:
  """Every collective instruction in `hlo_text` (compiled, optimised HLO)."""
  found = []
  for line in hlo_text.splitlines():
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    shapes = tuple((dtype, tuple(int(d) for d in dims.split(',') if d))
                   for dtype, dims in _ARRAY.findall(match.group(1)) if dtype in _DTYPE_BYTES)
    op_name = re.search(r'op_name="([^"]*)"', line)
    found.append(Collective(match.group(2), shapes, _parse_groups(line, num_devices),
                            op_name.group(1) if op_name else ''))
  return found


def total_operand_bytes(found: list[Collective]) -> int:
  return sum(c.operand_bytes for c in found)
