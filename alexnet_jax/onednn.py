"""oneDNN convolutions, max-pooling and LRN for the CPU training step, called from XLA through
`jax.ffi`.

XLA:CPU runs the gradients of AlexNet's convolutions far below its own forward speed; oneDNN's
kernels compute the same sums several times faster (docs/performance.md has the measurements).
Max-pooling's and LRN's forwards keep oneDNN's workspace (for max-pooling, which tap won each
window), so each backward is one oneDNN call. The kernels live in csrc/onednn_conv.cc, which
`make setup` compiles against the oneDNN wheel (requirements.txt) into `_onednn_conv.so` next to
this file. float32 and bfloat16 (all operands and results of one dtype) are supported.
`ops.fused_lrn` sends an LRN here only over whole blocks of 16 channels
(`ops.ONEDNN_LRN_CHANNEL_BLOCK`): at the default config's 24, XLA's loop was faster, and oneDNN's
bfloat16 backward is wrong at such counts. Without that library, or on another platform than the
CPU, `ops.conv`, `ops.max_pool` and `ops.fused_lrn` keep XLA's own kernels: `status()` says which
kernels run.

Set ALEXNET_JAX_ONEDNN=0 to use XLA's kernels even when the library is built.
"""

import contextlib
import ctypes
import os

import jax
from jax import lax
import numpy as np

LIBRARY_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), '_onednn_conv.so')
_DIRECTIONS = {'conv_forward': 'AlexnetConvForward',
               'conv_backward_data': 'AlexnetConvBackwardData',
               'conv_backward_weights': 'AlexnetConvBackwardWeights',
               'max_pool_forward': 'AlexnetMaxPoolForward',
               'max_pool_backward': 'AlexnetMaxPoolBackward',
               'lrn_forward': 'AlexnetLrnForward', 'lrn_backward': 'AlexnetLrnBackward'}
_TYPES = {'float32': '', 'bfloat16': 'Bf16'}  # The handlers' symbol suffix per dtype.
_registered = False
_load_error = ''
# The library's workspace-size functions (symbol, argument types), called when a layer is traced.
_WORKSPACE_FUNCTIONS = {
    'max_pool': ('AlexnetPoolWorkspaceBytes', [ctypes.c_int64] * 9),
    'lrn': ('AlexnetLrnWorkspaceBytes', [ctypes.c_int64] * 5 + [ctypes.c_float] * 3 +
            [ctypes.c_int64]),
}
_workspace_bytes = {}  # _WORKSPACE_FUNCTIONS' keys -> the loaded functions.


def _register() -> bool:
  """Loads the library and registers its handlers with XLA once; False if it cannot be loaded."""
  global _registered, _load_error
  if _registered or _load_error:
    return _registered
  if not os.path.exists(LIBRARY_PATH):
    _load_error = f'{LIBRARY_PATH} is not built (run `make setup`)'
    return False
  try:
    library = ctypes.cdll.LoadLibrary(LIBRARY_PATH)
  except OSError as e:
    _load_error = f'cannot load {LIBRARY_PATH}: {e}'
    return False
  symbols = [symbol + suffix for symbol in _DIRECTIONS.values() for suffix in _TYPES.values()]
  missing = [name for name in symbols + [symbol for symbol, _ in _WORKSPACE_FUNCTIONS.values()]
             if not hasattr(library, name)]
  if missing:  # Built from an older csrc/onednn_conv.cc: the .so is git-ignored, not rebuilt.
    _load_error = (f'{LIBRARY_PATH} is out of date (no {missing[0]}); run `make setup` to '
                   'rebuild it')
    return False
  for direction, symbol in _DIRECTIONS.items():
    for dtype, suffix in _TYPES.items():
      jax.ffi.register_ffi_target(_target(direction, dtype),
                                  jax.ffi.pycapsule(getattr(library, symbol + suffix)),
                                  platform='cpu')
  for name, (symbol, argtypes) in _WORKSPACE_FUNCTIONS.items():
    function = getattr(library, symbol)
    function.restype, function.argtypes = ctypes.c_int64, argtypes
    _workspace_bytes[name] = function
  _registered = True
  return True


_enabled_override: bool | None = None


def enabled_by_environment() -> bool:
  if _enabled_override is not None:
    return _enabled_override
  return os.environ.get('ALEXNET_JAX_ONEDNN', '1') != '0'


@contextlib.contextmanager
def enabled(use_onednn: bool):
  """Functions traced inside this context use (or do not use) oneDNN, whatever the environment
  says: e.g. a benchmark compiling both variants in one process."""
  global _enabled_override
  previous, _enabled_override = _enabled_override, use_onednn
  try:
    yield
  finally:
    _enabled_override = previous


def available() -> bool:
  """True when convolutions, max-pools and LRNs (over multiples of 16 channels) on the CPU
  backend go through oneDNN."""
  return enabled_by_environment() and jax.default_backend() == 'cpu' and _register()


def status() -> str:
  """One line for logs and benchmarks: which kernels the CPU step's convolutions, max-pools and
  LRNs use."""
  if not enabled_by_environment():
    return 'XLA kernels (oneDNN switched off)'
  if jax.default_backend() != 'cpu':
    return f'XLA kernels ({jax.default_backend()} backend)'
  if not _register():
    return f'XLA kernels ({_load_error})'
  return 'oneDNN convolution, max-pool and LRN (multiples of 16 channels) kernels'


def _target(direction: str, dtype: str) -> str:
  return f'alexnet_jax_{direction}_{dtype}'


def supports(x, kernel, stride: int, padding: int) -> bool:
  """Whether oneDNN runs this convolution: NHWC x HWIO, both float32 or both bfloat16, with a
  non-empty output, a kernel no larger than the input and at most 'same' padding."""
  if x.dtype != kernel.dtype or str(x.dtype) not in _TYPES:
    return False
  # Outside these, oneDNN's convolutions corrupted the heap (SIGSEGV at a later call) in jitted
  # value-and-grad loops, float32 and bfloat16: side/kernel/padding 1/5/2, 2/7/3, 3/9/4, 4/11/5,
  # 5/11/4, 3/9/3, 3/3/2, 2/1/2, and 7/11/2 at stride 4. Every model layer at its config's sizes
  # is inside them; XLA's convolution takes the rest (tiny or degenerate maps: nothing to lose).
  if max(kernel.shape[:2]) > min(x.shape[1:3]) or padding > (min(kernel.shape[:2]) - 1) // 2:
    return False
  _, out_h, out_w, _ = output_shape(x.shape, kernel.shape, stride, padding)
  return out_h > 0 and out_w > 0


def _call(direction: str, results, *args, **attributes) -> jax.Array | tuple[jax.Array, ...]:
  """The library's `direction` handler on `args`; `results`: one ShapeDtypeStruct or a tuple of
  them. Attributes: ints are passed as int64 (stride, padding, window, size), floats as
  float32."""
  if not _register():
    raise RuntimeError(f'oneDNN kernels are unavailable: {_load_error}')
  out = jax.ffi.ffi_call(_target(direction, str(args[0].dtype)), results,
                         vmap_method='sequential')(
                             *args, **{k: np.int64(v) if isinstance(v, int) else np.float32(v)
                                       for k, v in attributes.items()})
  # Inside shard_map the call's result is typed as the same on every device; it varies over
  # the mesh axes its operands vary over, as XLA's own convolution's result would.
  varying = tuple(sorted(set().union(*(varying_axes(arg) for arg in args))))
  if not varying:
    return out
  return jax.tree.map(lambda r: lax.pcast(r, varying, to='varying'), out)


def varying_axes(x) -> frozenset:
  """The shard_map mesh axes `x` is typed as varying over (none outside shard_map)."""
  aval = jax.typeof(x)
  return frozenset(aval.mat.varying if hasattr(aval, 'mat') else getattr(aval, 'vma', ()))


def output_shape(x_shape, kernel_shape, stride: int, padding: int) -> tuple[int, ...]:
  out = [(x_shape[i] + 2 * padding - kernel_shape[i - 1]) // stride + 1 for i in (1, 2)]
  return (x_shape[0], *out, kernel_shape[3])


def _like(shape, x) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(tuple(shape), x.dtype)


def conv_forward(x, kernel, stride: int, padding: int) -> jax.Array:
  return _call('conv_forward', _like(output_shape(x.shape, kernel.shape, stride, padding), x), x,
               kernel, stride=stride, padding=padding)


def conv_backward_data(g, kernel, x_shape, stride: int, padding: int) -> jax.Array:
  """d loss / d x of the convolution, given g = d loss / d output."""
  return _call('conv_backward_data', _like(x_shape, g), g, kernel, stride=stride, padding=padding)


def conv_backward_weights(x, g, kernel_shape, stride: int, padding: int) -> jax.Array:
  """d loss / d kernel of the convolution, given g = d loss / d output."""
  return _call('conv_backward_weights', _like(kernel_shape, x), x, g, stride=stride,
               padding=padding)


def max_pool_workspace_bytes(x_shape, y_shape, window: int, stride: int, dtype) -> int:
  """Bytes of oneDNN's max-pool workspace for NHWC `x_shape` -> `y_shape`; -1 where oneDNN has
  no max-pool for them (then `ops.max_pool` keeps XLA's)."""
  if str(dtype) not in _TYPES or not _register():
    return -1
  n, h, w, c = x_shape
  return int(_workspace_bytes['max_pool'](n, c, h, w, y_shape[1], y_shape[2], window, stride,
                                          int(str(dtype) == 'bfloat16')))


def max_pool_forward(x, y_shape, window: int, stride: int) -> tuple[jax.Array, jax.Array]:
  """(VALID max-pool of NHWC x, whose windows must cover x exactly; the workspace for
  `max_pool_backward`: uint8, which tap won each window, in oneDNN's own layout)."""
  workspace = max_pool_workspace_bytes(x.shape, y_shape, window, stride, x.dtype)
  return _call('max_pool_forward',
               (_like(y_shape, x), jax.ShapeDtypeStruct((workspace,), np.uint8)), x,
               window=window, stride=stride)


def max_pool_backward(g, workspace, x_shape, window: int, stride: int) -> jax.Array:
  """d loss / d x of the max-pool: each window's g goes to the tap its workspace names."""
  return _call('max_pool_backward', _like(x_shape, g), g, workspace, window=window,
               stride=stride)


def lrn_workspace_bytes(x_shape, n: int, alpha: float, beta: float, k: float, dtype) -> int:
  """Bytes of oneDNN's LRN workspace for NHWC `x_shape` and the paper's constants (alpha not
  divided by n); -1 where oneDNN has no LRN for them (then `ops.fused_lrn` keeps XLA's)."""
  if str(dtype) not in _TYPES or not _register():
    return -1
  return int(_workspace_bytes['lrn'](*x_shape, n, *_lrn_constants(n, alpha, beta, k),
                                     int(str(dtype) == 'bfloat16')))


def _lrn_constants(n: int, alpha: float, beta: float, k: float) -> tuple[float, float, float]:
  # oneDNN divides alpha by the window size (docs/paper.md, "LRN (§3.3)").
  return alpha * n, beta, k


def lrn_forward(x, n: int, alpha: float, beta: float, k: float) -> tuple[jax.Array, jax.Array]:
  """(§3.3 LRN of NHWC x over channels, x / (k + alpha sum_window x^2)^beta; the workspace for
  `lrn_backward`, uint8 in oneDNN's own layout)."""
  workspace = lrn_workspace_bytes(x.shape, n, alpha, beta, k, x.dtype)
  onednn_alpha, beta, k = _lrn_constants(n, alpha, beta, k)
  return _call('lrn_forward', (_like(x.shape, x), jax.ShapeDtypeStruct((workspace,), np.uint8)),
               x, size=n, alpha=onednn_alpha, beta=beta, k=k)


def lrn_backward(x, g, workspace, n: int, alpha: float, beta: float, k: float) -> jax.Array:
  """d loss / d x of `lrn_forward`, given g = d loss / d output."""
  onednn_alpha, beta, k = _lrn_constants(n, alpha, beta, k)
  return _call('lrn_backward', _like(x.shape, x), x, g, workspace, size=n, alpha=onednn_alpha,
               beta=beta, k=k)
