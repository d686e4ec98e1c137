// 2-D convolutions (forward, input gradient, weight gradient) by oneDNN, as XLA FFI handlers for JAX on the CPU.
// nets/onednn.py loads the built library and calls these through jax.ffi; `make` builds it where oneDNN's
// headers are installed (Debian: libdnnl-dev, oneDNN 2.6, tested; it also compiles against oneDNN 3.13's headers,
// not run). Arrays are JAX's: images NHWC, kernels HWIO, float32, no bias (the caller adds it), no groups, no
// dilation. `threads` sets OpenMP's thread count (Debian's build); other threading runtimes ignore it.
//
// Each XLA thread keeps its own primitives, keyed by shape and attributes, with the kernel in the blocked layout
// oneDNN chooses ("any": its direct AVX-512 kernels; with JAX's plain HWIO kernel it falls back to a GEMM
// convolution 2-3x slower), reordered on each call, and runs them on `threads` OpenMP threads.
#include <omp.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = memory::format_tag;

namespace {

enum Kind { kForward, kInputGrad, kWeightGrad };

struct Geometry {
  int64_t n, h, w, c, kh, kw, o, oh, ow, sh, sw, pt, pb, pl, pr;
  memory::desc src() const { return {{n, c, h, w}, memory::data_type::f32, tag::nhwc}; }
  memory::desc dst() const { return {{n, o, oh, ow}, memory::data_type::f32, tag::nhwc}; }
  memory::desc user_weights() const { return {{o, c, kh, kw}, memory::data_type::f32, tag::hwio}; }
  memory::desc any_weights() const { return {{o, c, kh, kw}, memory::data_type::f32, tag::any}; }
  auto key(Kind kind) const { return std::make_tuple(kind, n, h, w, c, kh, kw, o, sh, sw, pt, pb, pl, pr); }
};

const dnnl::engine& Engine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// The three operations' descriptions: oneDNN 3 takes the engine and the geometry directly, oneDNN 2 through an
// operation descriptor.
using ForwardPd = dnnl::convolution_forward::primitive_desc;
using InputGradPd = dnnl::convolution_backward_data::primitive_desc;
using WeightGradPd = dnnl::convolution_backward_weights::primitive_desc;
constexpr auto kDirect = dnnl::algorithm::convolution_direct;

ForwardPd ForwardDesc(const Geometry& g) {
#if DNNL_VERSION_MAJOR >= 3
  return ForwardPd(Engine(), dnnl::prop_kind::forward_training, kDirect, g.src(), g.any_weights(), g.dst(),
                   {g.sh, g.sw}, {g.pt, g.pl}, {g.pb, g.pr});
#else
  return ForwardPd({dnnl::prop_kind::forward_training, kDirect, g.src(), g.any_weights(), g.dst(), {g.sh, g.sw},
                    {g.pt, g.pl}, {g.pb, g.pr}}, Engine());
#endif
}

// The input gradient's (InputGradPd) or the weight gradient's (WeightGradPd), which take the same arguments.
template <typename BackwardPd>
BackwardPd BackwardDesc(const Geometry& g, const ForwardPd& fwd) {
#if DNNL_VERSION_MAJOR >= 3
  return BackwardPd(Engine(), kDirect, g.src(), g.any_weights(), g.dst(), {g.sh, g.sw}, {g.pt, g.pl},
                    {g.pb, g.pr}, fwd);
#else
  return BackwardPd({kDirect, g.src(), g.any_weights(), g.dst(), {g.sh, g.sw}, {g.pt, g.pl}, {g.pb, g.pr}},
                    Engine(), fwd);
#endif
}

// One cached operation: the convolution primitive, and the kernel's reorder between JAX's layout and oneDNN's.
struct Op {
  dnnl::primitive conv;
  memory src, weights, dst;            // the operation's three arrays, pointed at XLA's buffers on each call
  memory user_weights;                 // the kernel in JAX's layout
  dnnl::reorder reorder;               // user_weights <-> weights, when their layouts differ
  bool reordered = false;
};

std::unique_ptr<Op> MakeOp(Kind kind, const Geometry& g) {
  const auto& eng = Engine();
  auto op = std::make_unique<Op>();
  auto fwd = ForwardDesc(g);
  memory::desc weights_desc;
  if (kind == kForward) {
    op->conv = dnnl::convolution_forward(fwd);
    weights_desc = fwd.weights_desc();
  } else if (kind == kInputGrad) {
    auto pd = BackwardDesc<InputGradPd>(g, fwd);
    op->conv = dnnl::convolution_backward_data(pd);
    weights_desc = pd.weights_desc();
  } else {
    auto pd = BackwardDesc<WeightGradPd>(g, fwd);
    op->conv = dnnl::convolution_backward_weights(pd);
    weights_desc = pd.diff_weights_desc();
  }
  op->src = memory(g.src(), eng, DNNL_MEMORY_NONE);
  op->dst = memory(g.dst(), eng, DNNL_MEMORY_NONE);
  op->user_weights = memory(g.user_weights(), eng, DNNL_MEMORY_NONE);
  op->reordered = weights_desc != g.user_weights();
  if (op->reordered) {
    op->weights = memory(weights_desc, eng);  // owned scratch for the blocked kernel
    op->reorder = kind == kWeightGrad ? dnnl::reorder(op->weights, op->user_weights)
                                      : dnnl::reorder(op->user_weights, op->weights);
  } else {
    op->weights = memory(weights_desc, eng, DNNL_MEMORY_NONE);
  }
  return op;
}

// src, weights, dst: XLA's buffers, in JAX's layouts (for the gradients: dst is dy, src is dx, weights is dw).
void Run(Kind kind, const Geometry& g, int64_t threads, void* src, void* weights, void* dst) {
  thread_local std::map<decltype(g.key(kind)), std::unique_ptr<Op>> cache;
  thread_local dnnl::stream stream(Engine());
  // The thread count first: oneDNN fits a primitive's work split to the threads it sees when it is created, so a
  // primitive made before on a thread that still had OpenMP's default would sum the weight gradient in another
  // order, and which XLA thread first meets a shape depends on scheduling.
  if (omp_get_max_threads() != threads) omp_set_num_threads(static_cast<int>(threads));
  auto& op = cache[g.key(kind)];
  if (!op) op = MakeOp(kind, g);
  op->src.set_data_handle(src);
  op->dst.set_data_handle(dst);
  op->user_weights.set_data_handle(weights);
  if (!op->reordered) op->weights.set_data_handle(weights);
  if (op->reordered && kind != kWeightGrad) op->reorder.execute(stream, op->user_weights, op->weights);
  if (kind == kForward) {
    op->conv.execute(stream, {{DNNL_ARG_SRC, op->src}, {DNNL_ARG_WEIGHTS, op->weights}, {DNNL_ARG_DST, op->dst}});
  } else if (kind == kInputGrad) {
    op->conv.execute(stream,
                     {{DNNL_ARG_DIFF_DST, op->dst}, {DNNL_ARG_WEIGHTS, op->weights}, {DNNL_ARG_DIFF_SRC, op->src}});
  } else {
    op->conv.execute(stream,
                     {{DNNL_ARG_SRC, op->src}, {DNNL_ARG_DIFF_DST, op->dst}, {DNNL_ARG_DIFF_WEIGHTS, op->weights}});
    if (op->reordered) op->reorder.execute(stream, op->weights, op->user_weights);
  }
  stream.wait();
}

// images: (n, h, w, c); kernel: (kh, kw, c, o); out: (n, oh, ow, o).
Geometry Shape(ffi::Span<const int64_t> images, ffi::Span<const int64_t> kernel, ffi::Span<const int64_t> out,
               int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  return {images[0], images[1], images[2], images[3], kernel[0], kernel[1], kernel[3], out[1], out[2],
          sh, sw, pt, pb, pl, pr};
}

template <typename F>
ffi::Error Guard(F&& f) {
  try {
    f();
    return ffi::Error::Success();
  } catch (const std::exception& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN convolution: ") + e.what());
  }
}

using F32 = ffi::Buffer<ffi::F32>;
using Out = ffi::ResultBuffer<ffi::F32>;

ffi::Error Forward(F32 x, F32 w, Out y, int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr,
                   int64_t threads) {
  auto g = Shape(x.dimensions(), w.dimensions(), y->dimensions(), sh, sw, pt, pb, pl, pr);
  return Guard([&] { Run(kForward, g, threads, x.untyped_data(), w.untyped_data(), y->untyped_data()); });
}

ffi::Error InputGrad(F32 dy, F32 w, Out dx, int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr,
                     int64_t threads) {
  auto g = Shape(dx->dimensions(), w.dimensions(), dy.dimensions(), sh, sw, pt, pb, pl, pr);
  return Guard([&] { Run(kInputGrad, g, threads, dx->untyped_data(), w.untyped_data(), dy.untyped_data()); });
}

ffi::Error WeightGrad(F32 x, F32 dy, Out dw, int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr,
                      int64_t threads) {
  auto g = Shape(x.dimensions(), dw->dimensions(), dy.dimensions(), sh, sw, pt, pb, pl, pr);
  return Guard([&] { Run(kWeightGrad, g, threads, x.untyped_data(), dw->untyped_data(), dy.untyped_data()); });
}

// Every handler: two arrays in, one out, the geometry and the thread count as attributes.
auto Binding() {
  return ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>()
      .Attr<int64_t>("stride_h").Attr<int64_t>("stride_w").Attr<int64_t>("pad_top").Attr<int64_t>("pad_bottom")
      .Attr<int64_t>("pad_left").Attr<int64_t>("pad_right").Attr<int64_t>("threads");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvForward, Forward, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvInputGrad, InputGrad, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvWeightGrad, WeightGrad, Binding());
