// Convolutions, max-pooling and LRN for alexnet_jax's CPU training step, computed by oneDNN and
// called from XLA through the XLA FFI. XLA:CPU runs the convolution gradients at a fraction of
// the speed of its own forward convolution; oneDNN's kernels for the same maths are several times
// faster, and its max-pool and LRN backwards are one call each from the forward's workspace.
//
// Layouts are the model's: activations NHWC, kernels HWIO; float32, or bfloat16 (AMX on CPUs
// that have it) with every operand and result in bfloat16. The convolution handlers take the
// stride and the (symmetric) padding as attributes, max-pool the window and stride, LRN the
// window size and oneDNN's alpha, beta and k; the other sizes come from the buffers.
// Built by `make setup` (see the Makefile); loaded and wrapped by alexnet_jax/onednn.py.

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>

#include "dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using Tag = memory::format_tag;

namespace {

dnnl::engine& CpuEngine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// One convolution's geometry, in oneDNN's dimension order.
struct Geometry {
  int64_t n, ic, ih, iw, oc, kh, kw, oh, ow, stride, pad;
  memory::data_type type;
  auto Key() const {
    return std::make_tuple(n, ic, ih, iw, oc, kh, kw, oh, ow, stride, pad, type);
  }
  memory::dims Src() const { return {n, ic, ih, iw}; }
  memory::dims Weights() const { return {oc, ic, kh, kw}; }
  memory::dims Dst() const { return {n, oc, oh, ow}; }
  memory::dims Strides() const { return {stride, stride}; }
  memory::dims PadLeft() const { return {pad, pad}; }
  // XLA drops the rows a strided window does not reach; oneDNN wants them as (negative) padding.
  memory::dims PadRight() const {
    return {(oh - 1) * stride + kh - ih - pad, (ow - 1) * stride + kw - iw - pad};
  }
};

memory::desc Activations(const Geometry& g, const memory::dims& dims) {
  return memory::desc(dims, g.type, Tag::nhwc);
}
memory::desc UserWeights(const Geometry& g) { return memory::desc(g.Weights(), g.type, Tag::hwio); }
memory::desc AnyWeights(const Geometry& g) { return memory::desc(g.Weights(), g.type, Tag::any); }

// The primitives of one geometry, built once: each direction uses the weight layout oneDNN
// prefers for it, with reorders from and to the model's HWIO layout.
struct Primitives {
  dnnl::convolution_forward::primitive_desc forward_pd;
  dnnl::convolution_forward forward;
  dnnl::reorder forward_weights_in;
  dnnl::convolution_backward_data::primitive_desc data_pd;
  dnnl::convolution_backward_data backward_data;
  dnnl::reorder data_weights_in;
  dnnl::convolution_backward_weights::primitive_desc weights_pd;
  dnnl::convolution_backward_weights backward_weights;
  dnnl::reorder weights_out;

  explicit Primitives(const Geometry& g) {
    auto& engine = CpuEngine();
    const auto src = Activations(g, g.Src()), dst = Activations(g, g.Dst());
    forward_pd = dnnl::convolution_forward::primitive_desc(
        engine, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src,
        AnyWeights(g), dst, g.Strides(), g.PadLeft(), g.PadRight());
    forward = dnnl::convolution_forward(forward_pd);
    forward_weights_in = dnnl::reorder(memory(UserWeights(g), engine),
                                       memory(forward_pd.weights_desc(), engine));
    data_pd = dnnl::convolution_backward_data::primitive_desc(
        engine, dnnl::algorithm::convolution_direct, src, AnyWeights(g), dst, g.Strides(),
        g.PadLeft(), g.PadRight(), forward_pd);
    backward_data = dnnl::convolution_backward_data(data_pd);
    data_weights_in = dnnl::reorder(memory(UserWeights(g), engine),
                                    memory(data_pd.weights_desc(), engine));
    weights_pd = dnnl::convolution_backward_weights::primitive_desc(
        engine, dnnl::algorithm::convolution_direct, src, AnyWeights(g), dst, g.Strides(),
        g.PadLeft(), g.PadRight(), forward_pd);
    backward_weights = dnnl::convolution_backward_weights(weights_pd);
    weights_out = dnnl::reorder(memory(weights_pd.diff_weights_desc(), engine),
                                memory(UserWeights(g), engine));
  }
};

// One oneDNN call runs at a time: each already uses every core, and primitives plus their
// scratchpads are shared by the geometry cache.
std::mutex& ExecutionLock() {
  static std::mutex lock;
  return lock;
}

// The primitives `P` (Primitives, PoolPrimitives, LrnPrimitives) of one geometry, built on first
// use; one cache per kind. Callers hold ExecutionLock.
template <typename P, typename G>
P& CachedFor(const G& g) {
  static std::map<decltype(g.Key()), std::unique_ptr<P>> cache;
  auto& slot = cache[g.Key()];
  if (!slot) slot = std::make_unique<P>(g);
  return *slot;
}

void CheckWorkspace(const memory::desc& desc, size_t workspace_bytes) {
  if (desc.get_size() != workspace_bytes) {
    throw std::invalid_argument("the workspace size differs from oneDNN's");
  }
}

// Bytes of the workspace the forward primitive of `P` for `g` writes; -1 if oneDNN cannot build
// it. For the workspace-size functions called through ctypes, where no exception may escape.
template <typename P, typename G>
int64_t WorkspaceBytes(const G& g) {
  try {
    std::lock_guard<std::mutex> guard(ExecutionLock());
    return static_cast<int64_t>(CachedFor<P>(g).forward_pd.workspace_desc().get_size());
  } catch (...) {
    return -1;
  }
}

// Runs `reorder` from `user` into a buffer of `desc`'s layout when the layouts differ.
memory InLayout(const memory::desc& desc, memory user, dnnl::reorder& reorder,
                dnnl::stream& stream) {
  if (desc == user.get_desc()) return user;
  memory converted(desc, CpuEngine());
  reorder.execute(stream, user, converted);
  return converted;
}

template <ffi::DataType T>
constexpr memory::data_type kOneDnnType =
    T == ffi::DataType::BF16 ? memory::data_type::bf16 : memory::data_type::f32;

template <ffi::DataType T>
Geometry FromShapes(ffi::Span<const int64_t> x, ffi::Span<const int64_t> w,
                    ffi::Span<const int64_t> y, int64_t stride, int64_t pad) {
  // x: [N, H, W, C]; w: [KH, KW, IC, OC]; y: [N, OH, OW, OC].
  return Geometry{x[0], x[3], x[1], x[2], w[3], w[0], w[1], y[1], y[2], stride, pad,
                  kOneDnnType<T>};
}

ffi::Error CheckShapes(ffi::Span<const int64_t> x, ffi::Span<const int64_t> w,
                       ffi::Span<const int64_t> y) {
  if (x.size() != 4 || w.size() != 4 || y.size() != 4 || x[3] != w[2] || y[3] != w[3] ||
      x[0] != y[0]) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "onednn conv: expected NHWC input, HWIO kernel and NHWC output");
  }
  return ffi::Error::Success();
}

template <typename Run>
ffi::Error Guarded(Run run) {
  try {
    std::lock_guard<std::mutex> guard(ExecutionLock());
    run();
    return ffi::Error::Success();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN: ") + e.what());
  } catch (const std::invalid_argument& e) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, std::string("oneDNN kernels: ") + e.what());
  }
}


template <ffi::DataType T>
ffi::Error ForwardImpl(ffi::Buffer<T> x, ffi::Buffer<T> w, ffi::ResultBuffer<T> y, int64_t stride, int64_t padding) {
  if (auto e = CheckShapes(x.dimensions(), w.dimensions(), y->dimensions()); e.failure()) return e;
  const auto g = FromShapes<T>(x.dimensions(), w.dimensions(), y->dimensions(), stride, padding);
  return Guarded([&] {
    auto& p = CachedFor<Primitives>(g);
    auto& engine = CpuEngine();
    dnnl::stream stream(engine);
    memory src(Activations(g, g.Src()), engine, x.untyped_data());
    memory dst(Activations(g, g.Dst()), engine, y->untyped_data());
    memory weights = InLayout(p.forward_pd.weights_desc(),
                              memory(UserWeights(g), engine, w.untyped_data()),
                              p.forward_weights_in, stream);
    p.forward.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights},
                               {DNNL_ARG_DST, dst}});
    stream.wait();
  });
}

template <ffi::DataType T>
ffi::Error BackwardDataImpl(ffi::Buffer<T> dy, ffi::Buffer<T> w, ffi::ResultBuffer<T> dx, int64_t stride, int64_t padding) {
  if (auto e = CheckShapes(dx->dimensions(), w.dimensions(), dy.dimensions()); e.failure()) {
    return e;
  }
  const auto g = FromShapes<T>(dx->dimensions(), w.dimensions(), dy.dimensions(), stride, padding);
  return Guarded([&] {
    auto& p = CachedFor<Primitives>(g);
    auto& engine = CpuEngine();
    dnnl::stream stream(engine);
    memory diff_dst(Activations(g, g.Dst()), engine, dy.untyped_data());
    memory diff_src(Activations(g, g.Src()), engine, dx->untyped_data());
    memory weights = InLayout(p.data_pd.weights_desc(),
                              memory(UserWeights(g), engine, w.untyped_data()),
                              p.data_weights_in, stream);
    p.backward_data.execute(stream, {{DNNL_ARG_DIFF_DST, diff_dst}, {DNNL_ARG_WEIGHTS, weights},
                                     {DNNL_ARG_DIFF_SRC, diff_src}});
    stream.wait();
  });
}

template <ffi::DataType T>
ffi::Error BackwardWeightsImpl(ffi::Buffer<T> x, ffi::Buffer<T> dy, ffi::ResultBuffer<T> dw, int64_t stride, int64_t padding) {
  if (auto e = CheckShapes(x.dimensions(), dw->dimensions(), dy.dimensions()); e.failure()) {
    return e;
  }
  const auto g = FromShapes<T>(x.dimensions(), dw->dimensions(), dy.dimensions(), stride, padding);
  return Guarded([&] {
    auto& p = CachedFor<Primitives>(g);
    auto& engine = CpuEngine();
    dnnl::stream stream(engine);
    memory src(Activations(g, g.Src()), engine, x.untyped_data());
    memory diff_dst(Activations(g, g.Dst()), engine, dy.untyped_data());
    memory user_diff_weights(UserWeights(g), engine, dw->untyped_data());
    const auto& desc = p.weights_pd.diff_weights_desc();
    memory diff_weights = desc == UserWeights(g) ? user_diff_weights : memory(desc, engine);
    p.backward_weights.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, diff_dst},
                                        {DNNL_ARG_DIFF_WEIGHTS, diff_weights}});
    if (desc != UserWeights(g)) p.weights_out.execute(stream, diff_weights, user_diff_weights);
    stream.wait();
  });
}


// --- Max-pooling (VALID windows): forward for training, with oneDNN's workspace (which tap of
// each window was the maximum), and backward from that workspace. XLA:CPU's reduce_window plus
// the tap-by-tap gradient in alexnet_jax/ops.py make several passes over the input; oneDNN's
// backward is one.

struct PoolGeometry {
  int64_t n, c, ih, iw, oh, ow, window, stride;
  memory::data_type type;
  auto Key() const { return std::make_tuple(n, c, ih, iw, oh, ow, window, stride, type); }
  memory::desc Src() const { return memory::desc({n, c, ih, iw}, type, Tag::nhwc); }
  memory::desc Dst() const { return memory::desc({n, c, oh, ow}, type, Tag::nhwc); }
};

struct PoolPrimitives {
  dnnl::pooling_forward::primitive_desc forward_pd;
  dnnl::pooling_forward forward;
  dnnl::pooling_backward::primitive_desc backward_pd;
  dnnl::pooling_backward backward;

  explicit PoolPrimitives(const PoolGeometry& g) {
    auto& engine = CpuEngine();
    // The caller passes exactly the rows and columns the windows cover: no padding.
    const memory::dims strides{g.stride, g.stride}, kernel{g.window, g.window}, dilation{0, 0},
        pad{0, 0};
    forward_pd = dnnl::pooling_forward::primitive_desc(
        engine, dnnl::prop_kind::forward_training, dnnl::algorithm::pooling_max, g.Src(), g.Dst(),
        strides, kernel, dilation, pad, pad);
    forward = dnnl::pooling_forward(forward_pd);
    backward_pd = dnnl::pooling_backward::primitive_desc(
        engine, dnnl::algorithm::pooling_max, g.Src(), g.Dst(), strides, kernel, dilation, pad,
        pad, forward_pd);
    backward = dnnl::pooling_backward(backward_pd);
  }
};

template <ffi::DataType T>
PoolGeometry PoolFromShapes(ffi::Span<const int64_t> x, ffi::Span<const int64_t> y,
                            int64_t window, int64_t stride) {
  // x: [N, H, W, C]; y: [N, OH, OW, C].
  return PoolGeometry{x[0], x[3], x[1], x[2], y[1], y[2], window, stride, kOneDnnType<T>};
}

// Throws std::invalid_argument unless x [N, H, W, C] -> y [N, OH, OW, C] is covered exactly by
// the windows and the workspace buffer has oneDNN's size for it.
void CheckPool(ffi::Span<const int64_t> x, ffi::Span<const int64_t> y, int64_t window,
               int64_t stride, size_t workspace_bytes, const PoolPrimitives& p) {
  if (x.size() != 4 || y.size() != 4 || x[0] != y[0] || x[3] != y[3] ||
      (y[1] - 1) * stride + window != x[1] || (y[2] - 1) * stride + window != x[2]) {
    throw std::invalid_argument("expected NHWC input covered exactly by the windows");
  }
  CheckWorkspace(p.forward_pd.workspace_desc(), workspace_bytes);
}

template <ffi::DataType T>
ffi::Error PoolForwardImpl(ffi::Buffer<T> x, ffi::ResultBuffer<T> y,
                           ffi::ResultBuffer<ffi::DataType::U8> workspace, int64_t window,
                           int64_t stride) {
  const auto g = PoolFromShapes<T>(x.dimensions(), y->dimensions(), window, stride);
  return Guarded([&] {
    auto& p = CachedFor<PoolPrimitives>(g);
    CheckPool(x.dimensions(), y->dimensions(), window, stride, workspace->size_bytes(), p);
    auto& engine = CpuEngine();
    dnnl::stream stream(engine);
    p.forward.execute(stream, {{DNNL_ARG_SRC, memory(g.Src(), engine, x.untyped_data())},
                               {DNNL_ARG_DST, memory(g.Dst(), engine, y->untyped_data())},
                               {DNNL_ARG_WORKSPACE,
                                memory(p.forward_pd.workspace_desc(), engine,
                                       workspace->untyped_data())}});
    stream.wait();
  });
}

template <ffi::DataType T>
ffi::Error PoolBackwardImpl(ffi::Buffer<T> dy, ffi::Buffer<ffi::DataType::U8> workspace,
                            ffi::ResultBuffer<T> dx, int64_t window, int64_t stride) {
  const auto g = PoolFromShapes<T>(dx->dimensions(), dy.dimensions(), window, stride);
  return Guarded([&] {
    auto& p = CachedFor<PoolPrimitives>(g);
    CheckPool(dx->dimensions(), dy.dimensions(), window, stride, workspace.size_bytes(), p);
    auto& engine = CpuEngine();
    dnnl::stream stream(engine);
    p.backward.execute(stream, {{DNNL_ARG_DIFF_DST, memory(g.Dst(), engine, dy.untyped_data())},
                                {DNNL_ARG_DIFF_SRC, memory(g.Src(), engine, dx->untyped_data())},
                                {DNNL_ARG_WORKSPACE,
                                 memory(p.forward_pd.workspace_desc(), engine,
                                        const_cast<void*>(workspace.untyped_data()))}});
    stream.wait();
  });
}

// --- Local response normalization across channels (§3.3), forward for training with oneDNN's
// workspace, and backward. oneDNN divides alpha by the window size: the caller passes the
// paper's alpha times n.

struct LrnGeometry {
  int64_t n, c, h, w, size;
  float alpha, beta, k;  // alpha as oneDNN reads it (divided by size).
  memory::data_type type;
  auto Key() const { return std::make_tuple(n, c, h, w, size, alpha, beta, k, type); }
  memory::desc Data() const { return memory::desc({n, c, h, w}, type, Tag::nhwc); }
};

struct LrnPrimitives {
  dnnl::lrn_forward::primitive_desc forward_pd;
  dnnl::lrn_forward forward;
  dnnl::lrn_backward::primitive_desc backward_pd;
  dnnl::lrn_backward backward;

  explicit LrnPrimitives(const LrnGeometry& g) {
    auto& engine = CpuEngine();
    forward_pd = dnnl::lrn_forward::primitive_desc(
        engine, dnnl::prop_kind::forward_training, dnnl::algorithm::lrn_across_channels,
        g.Data(), g.Data(), g.size, g.alpha, g.beta, g.k);
    forward = dnnl::lrn_forward(forward_pd);
    backward_pd = dnnl::lrn_backward::primitive_desc(
        engine, dnnl::algorithm::lrn_across_channels, g.Data(), g.Data(), g.Data(), g.size,
        g.alpha, g.beta, g.k, forward_pd);
    backward = dnnl::lrn_backward(backward_pd);
  }
};

template <ffi::DataType T>
LrnGeometry LrnFromShape(ffi::Span<const int64_t> x, int64_t size, float alpha, float beta,
                         float k) {
  if (x.size() != 4) throw std::invalid_argument("expected an NHWC input");
  return LrnGeometry{x[0], x[3], x[1], x[2], size, alpha, beta, k, kOneDnnType<T>};
}

template <ffi::DataType T>
ffi::Error LrnForwardImpl(ffi::Buffer<T> x, ffi::ResultBuffer<T> y,
                          ffi::ResultBuffer<ffi::DataType::U8> workspace, int64_t size,
                          float alpha, float beta, float k) {
  return Guarded([&] {
    const auto g = LrnFromShape<T>(x.dimensions(), size, alpha, beta, k);
    auto& p = CachedFor<LrnPrimitives>(g);
    CheckWorkspace(p.forward_pd.workspace_desc(), workspace->size_bytes());
    auto& engine = CpuEngine();
    dnnl::stream stream(engine);
    p.forward.execute(stream, {{DNNL_ARG_SRC, memory(g.Data(), engine, x.untyped_data())},
                               {DNNL_ARG_DST, memory(g.Data(), engine, y->untyped_data())},
                               {DNNL_ARG_WORKSPACE,
                                memory(p.forward_pd.workspace_desc(), engine,
                                       workspace->untyped_data())}});
    stream.wait();
  });
}

template <ffi::DataType T>
ffi::Error LrnBackwardImpl(ffi::Buffer<T> x, ffi::Buffer<T> dy,
                           ffi::Buffer<ffi::DataType::U8> workspace, ffi::ResultBuffer<T> dx,
                           int64_t size, float alpha, float beta, float k) {
  return Guarded([&] {
    const auto g = LrnFromShape<T>(x.dimensions(), size, alpha, beta, k);
    auto& p = CachedFor<LrnPrimitives>(g);
    CheckWorkspace(p.forward_pd.workspace_desc(), workspace.size_bytes());
    auto& engine = CpuEngine();
    dnnl::stream stream(engine);
    p.backward.execute(stream, {{DNNL_ARG_SRC, memory(g.Data(), engine, x.untyped_data())},
                                {DNNL_ARG_DIFF_DST, memory(g.Data(), engine, dy.untyped_data())},
                                {DNNL_ARG_DIFF_SRC, memory(g.Data(), engine, dx->untyped_data())},
                                {DNNL_ARG_WORKSPACE,
                                 memory(p.forward_pd.workspace_desc(), engine,
                                        const_cast<void*>(workspace.untyped_data()))}});
    stream.wait();
  });
}

}  // namespace

// Bytes of the workspace a max-pool forward call returns, for the caller to allocate it: called
// through ctypes when a max-pool is traced. -1 if oneDNN cannot build the primitive.
extern "C" int64_t AlexnetPoolWorkspaceBytes(int64_t n, int64_t c, int64_t ih, int64_t iw,
                                             int64_t oh, int64_t ow, int64_t window,
                                             int64_t stride, int64_t bfloat16) {
  return WorkspaceBytes<PoolPrimitives>(PoolGeometry{
      n, c, ih, iw, oh, ow, window, stride,
      bfloat16 ? memory::data_type::bf16 : memory::data_type::f32});
}

// Bytes of the workspace an LRN forward call returns (NHWC [n, h, w, c]); -1 if oneDNN cannot
// build the primitive. `alpha` as oneDNN reads it (divided by `size`).
extern "C" int64_t AlexnetLrnWorkspaceBytes(int64_t n, int64_t h, int64_t w, int64_t c,
                                            int64_t size, float alpha, float beta, float k,
                                            int64_t bfloat16) {
  return WorkspaceBytes<LrnPrimitives>(LrnGeometry{
      n, c, h, w, size, alpha, beta, k,
      bfloat16 ? memory::data_type::bf16 : memory::data_type::f32});
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(AlexnetConvForward, ForwardImpl<ffi::DataType::F32>,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::DataType::F32>>()
                                  .Arg<ffi::Buffer<ffi::DataType::F32>>()
                                  .Ret<ffi::Buffer<ffi::DataType::F32>>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("padding"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(AlexnetConvForwardBf16, ForwardImpl<ffi::DataType::BF16>,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::DataType::BF16>>()
                                  .Arg<ffi::Buffer<ffi::DataType::BF16>>()
                                  .Ret<ffi::Buffer<ffi::DataType::BF16>>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("padding"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(AlexnetConvBackwardData, BackwardDataImpl<ffi::DataType::F32>,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::DataType::F32>>()
                                  .Arg<ffi::Buffer<ffi::DataType::F32>>()
                                  .Ret<ffi::Buffer<ffi::DataType::F32>>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("padding"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(AlexnetConvBackwardDataBf16, BackwardDataImpl<ffi::DataType::BF16>,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::DataType::BF16>>()
                                  .Arg<ffi::Buffer<ffi::DataType::BF16>>()
                                  .Ret<ffi::Buffer<ffi::DataType::BF16>>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("padding"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(AlexnetConvBackwardWeights, BackwardWeightsImpl<ffi::DataType::F32>,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::DataType::F32>>()
                                  .Arg<ffi::Buffer<ffi::DataType::F32>>()
                                  .Ret<ffi::Buffer<ffi::DataType::F32>>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("padding"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(AlexnetConvBackwardWeightsBf16, BackwardWeightsImpl<ffi::DataType::BF16>,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::DataType::BF16>>()
                                  .Arg<ffi::Buffer<ffi::DataType::BF16>>()
                                  .Ret<ffi::Buffer<ffi::DataType::BF16>>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("padding"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(AlexnetMaxPoolForward, PoolForwardImpl<ffi::DataType::F32>,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::DataType::F32>>()
                                  .Ret<ffi::Buffer<ffi::DataType::F32>>()
                                  .Ret<ffi::Buffer<ffi::DataType::U8>>()
                                  .Attr<int64_t>("window")
                                  .Attr<int64_t>("stride"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(AlexnetMaxPoolBackward, PoolBackwardImpl<ffi::DataType::F32>,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::DataType::F32>>()
                                  .Arg<ffi::Buffer<ffi::DataType::U8>>()
                                  .Ret<ffi::Buffer<ffi::DataType::F32>>()
                                  .Attr<int64_t>("window")
                                  .Attr<int64_t>("stride"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(AlexnetMaxPoolForwardBf16, PoolForwardImpl<ffi::DataType::BF16>,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::DataType::BF16>>()
                                  .Ret<ffi::Buffer<ffi::DataType::BF16>>()
                                  .Ret<ffi::Buffer<ffi::DataType::U8>>()
                                  .Attr<int64_t>("window")
                                  .Attr<int64_t>("stride"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(AlexnetMaxPoolBackwardBf16, PoolBackwardImpl<ffi::DataType::BF16>,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::DataType::BF16>>()
                                  .Arg<ffi::Buffer<ffi::DataType::U8>>()
                                  .Ret<ffi::Buffer<ffi::DataType::BF16>>()
                                  .Attr<int64_t>("window")
                                  .Attr<int64_t>("stride"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(AlexnetLrnForward, LrnForwardImpl<ffi::DataType::F32>,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::DataType::F32>>()
                                  .Ret<ffi::Buffer<ffi::DataType::F32>>()
                                  .Ret<ffi::Buffer<ffi::DataType::U8>>()
                                  .Attr<int64_t>("size")
                                  .Attr<float>("alpha")
                                  .Attr<float>("beta")
                                  .Attr<float>("k"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(AlexnetLrnBackward, LrnBackwardImpl<ffi::DataType::F32>,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::DataType::F32>>()
                                  .Arg<ffi::Buffer<ffi::DataType::F32>>()
                                  .Arg<ffi::Buffer<ffi::DataType::U8>>()
                                  .Ret<ffi::Buffer<ffi::DataType::F32>>()
                                  .Attr<int64_t>("size")
                                  .Attr<float>("alpha")
                                  .Attr<float>("beta")
                                  .Attr<float>("k"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(AlexnetLrnForwardBf16, LrnForwardImpl<ffi::DataType::BF16>,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::DataType::BF16>>()
                                  .Ret<ffi::Buffer<ffi::DataType::BF16>>()
                                  .Ret<ffi::Buffer<ffi::DataType::U8>>()
                                  .Attr<int64_t>("size")
                                  .Attr<float>("alpha")
                                  .Attr<float>("beta")
                                  .Attr<float>("k"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(AlexnetLrnBackwardBf16, LrnBackwardImpl<ffi::DataType::BF16>,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::DataType::BF16>>()
                                  .Arg<ffi::Buffer<ffi::DataType::BF16>>()
                                  .Arg<ffi::Buffer<ffi::DataType::U8>>()
                                  .Ret<ffi::Buffer<ffi::DataType::BF16>>()
                                  .Attr<int64_t>("size")
                                  .Attr<float>("alpha")
                                  .Attr<float>("beta")
                                  .Attr<float>("k"));
