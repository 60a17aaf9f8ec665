"""Keeps freed memory in the process, so a training step does not fault its buffers in each time.

XLA:CPU allocates every buffer of a step with malloc and frees it when the step ends. glibc's
malloc serves large blocks with mmap and hands them back to the kernel on free: blocks over its
mmap threshold (at most 32 MiB), and, on worker threads, any block larger than a thread arena's
64 MiB heap whatever the settings. The next step then faults the same memory in again, page by
page: the paper model at batch 32 took 248,000 minor page faults and 0.47 s of kernel time per
training step, against ~1.75 s of user time (docs/performance.md, "Memory: the allocator").

`keep_freed_memory()`, called when `alexnet_jax` is imported, sets glibc's malloc (mallopt(3)) to
serve large blocks from the heap (M_MMAP_MAX=0), from one arena for all threads (M_ARENA_MAX=1,
so worker threads' blocks come from the main heap too) and never to give the heap's top back
(M_TRIM_THRESHOLD=-1). Freed blocks are then reused by the next step: no faults once the heap has
grown to the step's peak, at the cost of a resident size that stays at that peak.

The arena limit only binds threads that allocate for the first time after it is set (and glibc
fixes its limit for good once a process has more than 8 arenas), so `alexnet_jax` must be
imported before TensorFlow runs anything and before JAX starts its CPU backend: entry points
import it first, and `status()` says when it came too late.

The settings were measured on the CPU backend only, where XLA's step buffers live in host memory;
on a GPU or TPU they live on the device, and the host runs the input pipeline's many threads, which
one arena could slow. So they apply only where JAX will run on the CPU (`expected_platform()`,
judged before JAX starts, since the settings must come first).

Set ALEXNET_JAX_MALLOC=system to keep glibc's defaults, =tuned to apply the settings whatever the
platform. Nothing is changed where malloc is not glibc's (macOS, musl, or another allocator such
as tcmalloc preloaded with LD_PRELOAD).
"""

import ctypes
import importlib.util
import logging
import os
import pkgutil

# <malloc.h> parameter numbers; the values as mallopt(3) documents them.
_M_TRIM_THRESHOLD = -1  # -1: never return the heap's free top to the kernel.
_M_MMAP_MAX = -4  # 0: never serve a block with its own mmap.
_M_ARENA_MAX = -8  # 1: every thread allocates from the main arena (the heap).
SETTINGS = ((_M_MMAP_MAX, 0), (_M_ARENA_MAX, 1), (_M_TRIM_THRESHOLD, -1))

_status: str | None = None


def keep_freed_memory() -> str:
  """Applies SETTINGS to glibc's malloc once per process; returns what was done, in words.

  Never raises: where the settings cannot apply, the process keeps its allocator's defaults and
  the reason is logged once at DEBUG level (and returned).
  """
  global _status
  if _status is None:
    _status = _apply()
    logging.getLogger(__name__).debug('malloc: %s', _status)
  return _status


def status() -> str:
  """What `keep_freed_memory()` did in this process ('not applied' before it ran)."""
  return _status or 'not applied'


def expected_platform() -> str:
  """The platform JAX will pick, judged without starting it: 'cpu', or the accelerator's name.

  The first entry of JAX_PLATFORMS when it is set; else 'tpu' where libtpu is installed, 'gpu'
  where a CUDA or ROCm PJRT plugin is (`jax[cuda12]` and the like install one in the
  `jax_plugins` namespace); else 'cpu'. A plugin installed on a machine without its device is
  misjudged as that device (JAX itself then falls back to the CPU).
  """
  platforms = os.environ.get('JAX_PLATFORMS', '').strip().lower()
  if platforms:
    return platforms.split(',')[0].strip()
  if importlib.util.find_spec('libtpu') is not None:
    return 'tpu'
  plugins = importlib.util.find_spec('jax_plugins')
  if plugins is not None and plugins.submodule_search_locations:
    if any(module.name.startswith(('xla_cuda', 'xla_rocm'))
           for module in pkgutil.iter_modules(plugins.submodule_search_locations)):
      return 'gpu'
  return 'cpu'


def _apply() -> str:
  setting = os.environ.get('ALEXNET_JAX_MALLOC', '')
  if setting == 'system':
    return 'glibc defaults kept (ALEXNET_JAX_MALLOC=system)'
  platform = expected_platform()
  if platform != 'cpu' and setting != 'tuned':
    return (f'glibc defaults kept: JAX will run on {platform}, and the settings were measured on '
            'the CPU only (ALEXNET_JAX_MALLOC=tuned applies them)')
  libc = _glibc()
  if libc is None:
    return 'not glibc; allocator defaults kept'
  # Another malloc interposed with LD_PRELOAD (tcmalloc, jemalloc) takes the process's malloc
  # calls; glibc's settings would change nothing, and tcmalloc's mallopt ignores them.
  process_malloc = ctypes.cast(ctypes.CDLL(None).malloc, ctypes.c_void_p).value
  if process_malloc != ctypes.cast(libc.malloc, ctypes.c_void_p).value:
    return 'malloc is not glibc\'s (preloaded allocator?); its defaults kept'
  failed = [param for param, value in SETTINGS if libc.mallopt(param, value) != 1]
  if failed:
    return f'glibc mallopt refused parameters {failed}; the others applied'
  arenas = _arena_count(libc)
  if arenas and arenas > 1:
    return (f'glibc malloc settings applied, but {arenas} arenas were already in use (alexnet_jax '
            'was imported after other threads allocated): their large blocks still come and go')
  return 'glibc malloc keeps freed memory (M_MMAP_MAX=0, M_ARENA_MAX=1, M_TRIM_THRESHOLD=-1)'


def _arena_count(libc: ctypes.CDLL) -> int | None:
  """Arenas glibc has created so far, from malloc_info(3)'s XML (one <heap> element each)."""
  buffer, size = ctypes.c_void_p(), ctypes.c_size_t()
  libc.open_memstream.restype = ctypes.c_void_p
  stream = libc.open_memstream(ctypes.byref(buffer), ctypes.byref(size))
  if not stream:
    return None
  libc.malloc_info(0, ctypes.c_void_p(stream))
  libc.fclose(ctypes.c_void_p(stream))
  xml = ctypes.string_at(buffer, size.value)
  libc.free(buffer)
  return xml.count(b'<heap nr=')


def _glibc() -> ctypes.CDLL | None:
  """glibc's C library with mallopt, or None (another C library, or no shared libc at all)."""
  try:
    libc = ctypes.CDLL('libc.so.6')
    libc.gnu_get_libc_version  # pylint: disable=pointless-statement  # Only glibc has it.
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
  except (OSError, AttributeError):
    return None
  return libc
