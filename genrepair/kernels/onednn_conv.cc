// 2-D convolutions for XLA:CPU through oneDNN, as XLA FFI custom calls.
//
// Three handlers share one geometry (stride, low/high padding, kernel dilation):
//   genrepair_conv_fwd : x [N, H, W, Ci] (NHWC), w [Kh, Kw, Ci, Co] (HWIO) -> y [N, Ho, Wo, Co]
//   genrepair_conv_bwd_data : g [N, Ho, Wo, Co], w -> dx [N, H, W, Ci]
//   genrepair_conv_bwd_weights : x, g -> dw [Kh, Kw, Ci, Co]
// i.e. oneDNN's convolution_forward / _backward_data / _backward_weights, float32. Operands
// are reordered to the blocked layouts oneDNN picks ("any") and results back to NHWC/HWIO.
// A call's batch rows are split into `parts` contiguous parts, run by the executing XLA
// thread and by tasks it schedules on XLA's intra-op pool (whichever claims a part first),
// each part one oneDNN call with `threads` OpenMP threads (1 by default).
// Primitives are cached per geometry and thread count; scratchpads and reorder buffers are
// per executing thread, so the same primitive may run concurrently on several threads.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;

namespace {

enum Kind { kFwd = 0, kBwdData = 1, kBwdWeights = 2 };

// Most batch parts of one weight-gradient call (see Run).
constexpr int64_t kMaxWeightParts = 8;

dnnl::engine& Engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

struct Entry {
  dnnl::primitive prim;
  // Plain (user) and internal descriptors of input a, input b, output c.
  memory::desc a_user, b_user, c_user, a_md, b_md, c_md;
  bool ra = false, rb = false, rc = false;
  dnnl::primitive a_reorder, b_reorder, c_reorder;
  int a_arg = 0, b_arg = 0, c_arg = 0;
  size_t scratch = 0;
};

struct Buffers {
  void* p[4] = {nullptr, nullptr, nullptr, nullptr};
  size_t n[4] = {0, 0, 0, 0};
  void* get(int i, size_t bytes) {
    if (bytes == 0) return nullptr;
    if (n[i] < bytes) {
      std::free(p[i]);
      size_t rounded = (bytes + 4095) / 4096 * 4096;
      p[i] = std::aligned_alloc(4096, rounded);
      n[i] = p[i] ? rounded : 0;
    }
    return p[i];
  }
  ~Buffers() {
    for (void* q : p) std::free(q);
  }
};

thread_local Buffers tls_buffers;

std::mutex cache_mutex;
std::unordered_map<std::string, std::shared_ptr<Entry>>& Cache() {
  static auto* c = new std::unordered_map<std::string, std::shared_ptr<Entry>>();
  return *c;
}

struct Geometry {
  memory::dim N, H, W, Ci, Ho, Wo, Co, Kh, Kw;
  memory::dims strides, pad_lo, pad_hi, dilation;  // dilation in oneDNN's convention (d - 1)
};

std::string Key(Kind kind, const Geometry& g, int threads) {
  std::ostringstream s;
  s << kind << ':' << g.N << ',' << g.H << ',' << g.W << ',' << g.Ci << ',' << g.Ho << ','
    << g.Wo << ',' << g.Co << ',' << g.Kh << ',' << g.Kw;
  for (const auto* v : {&g.strides, &g.pad_lo, &g.pad_hi, &g.dilation})
    s << ';' << (*v)[0] << ',' << (*v)[1];
  s << ";t" << threads;
  return s.str();
}

std::shared_ptr<Entry> Build(Kind kind, const Geometry& g) {
  auto& eng = Engine();
  const auto f32 = memory::data_type::f32;
  memory::dims src_d = {g.N, g.Ci, g.H, g.W}, w_d = {g.Co, g.Ci, g.Kh, g.Kw},
               dst_d = {g.N, g.Co, g.Ho, g.Wo};
  memory::desc src_u(src_d, f32, memory::format_tag::nhwc);
  memory::desc w_u(w_d, f32, memory::format_tag::hwio);
  memory::desc dst_u(dst_d, f32, memory::format_tag::nhwc);
  memory::desc src_a(src_d, f32, memory::format_tag::any);
  memory::desc w_a(w_d, f32, memory::format_tag::any);
  memory::desc dst_a(dst_d, f32, memory::format_tag::any);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto fwd_pd = dnnl::convolution_forward::primitive_desc(
      eng, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src_a,
      w_a, dst_a, g.strides, g.dilation, g.pad_lo, g.pad_hi, attr);
  auto e = std::make_shared<Entry>();
  if (kind == kFwd) {
    // The forward pass reads and writes NHWC directly (oneDNN's brgemm kernels, as fast as
    // the blocked ones here) and so skips two reorders of the activations; the backward
    // kernels for NHWC are much slower (gemm-based), so they reorder to blocked layouts.
    fwd_pd = dnnl::convolution_forward::primitive_desc(
        eng, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src_u,
        w_a, dst_u, g.strides, g.dilation, g.pad_lo, g.pad_hi, attr);
    e->prim = dnnl::convolution_forward(fwd_pd);
    e->a_user = src_u; e->b_user = w_u; e->c_user = dst_u;
    e->a_md = fwd_pd.src_desc(); e->b_md = fwd_pd.weights_desc(); e->c_md = fwd_pd.dst_desc();
    e->a_arg = DNNL_ARG_SRC; e->b_arg = DNNL_ARG_WEIGHTS; e->c_arg = DNNL_ARG_DST;
    e->scratch = fwd_pd.scratchpad_desc().get_size();
  } else if (kind == kBwdData) {
    auto pd = dnnl::convolution_backward_data::primitive_desc(
        eng, dnnl::algorithm::convolution_direct, src_a, w_a, dst_a, g.strides, g.dilation,
        g.pad_lo, g.pad_hi, fwd_pd, attr);
    e->prim = dnnl::convolution_backward_data(pd);
    e->a_user = dst_u; e->b_user = w_u; e->c_user = src_u;
    e->a_md = pd.diff_dst_desc(); e->b_md = pd.weights_desc(); e->c_md = pd.diff_src_desc();
    e->a_arg = DNNL_ARG_DIFF_DST; e->b_arg = DNNL_ARG_WEIGHTS; e->c_arg = DNNL_ARG_DIFF_SRC;
    e->scratch = pd.scratchpad_desc().get_size();
  } else {
    auto pd = dnnl::convolution_backward_weights::primitive_desc(
        eng, dnnl::algorithm::convolution_direct, src_a, w_a, dst_a, g.strides, g.dilation,
        g.pad_lo, g.pad_hi, fwd_pd, attr);
    e->prim = dnnl::convolution_backward_weights(pd);
    e->a_user = src_u; e->b_user = dst_u; e->c_user = w_u;
    e->a_md = pd.src_desc(); e->b_md = pd.diff_dst_desc(); e->c_md = pd.diff_weights_desc();
    e->a_arg = DNNL_ARG_SRC; e->b_arg = DNNL_ARG_DIFF_DST; e->c_arg = DNNL_ARG_DIFF_WEIGHTS;
    e->scratch = pd.scratchpad_desc().get_size();
  }
  e->ra = e->a_md != e->a_user;
  e->rb = e->b_md != e->b_user;
  e->rc = e->c_md != e->c_user;
  if (e->ra) e->a_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(eng, e->a_user, eng, e->a_md));
  if (e->rb) e->b_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(eng, e->b_user, eng, e->b_md));
  if (e->rc) e->c_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(eng, e->c_md, eng, e->c_user));
  return e;
}

// One oneDNN call over a whole operand set (`a`, `b` -> `c`, already offset to a part's
// rows) with `nthr` OpenMP threads on the calling thread. Throws dnnl::error.
void Execute(Kind kind, const Geometry& g, int nthr, void* a, void* b, void* c) {
  omp_set_num_threads(nthr);
  std::shared_ptr<Entry> e;
  std::string key = Key(kind, g, nthr);
  {
    std::lock_guard<std::mutex> lock(cache_mutex);
    auto it = Cache().find(key);
    if (it != Cache().end()) e = it->second;
  }
  if (!e) {
    e = Build(kind, g);
    std::lock_guard<std::mutex> lock(cache_mutex);
    Cache().emplace(key, e);
  }
  auto& eng = Engine();
  thread_local dnnl::stream strm(eng);
  Buffers& buf = tls_buffers;
  memory a_user(e->a_user, eng, a);
  memory b_user(e->b_user, eng, b);
  memory c_user(e->c_user, eng, c);
  memory a_mem = e->ra ? memory(e->a_md, eng, buf.get(0, e->a_md.get_size())) : a_user;
  memory b_mem = e->rb ? memory(e->b_md, eng, buf.get(1, e->b_md.get_size())) : b_user;
  memory c_mem = e->rc ? memory(e->c_md, eng, buf.get(2, e->c_md.get_size())) : c_user;
  if (e->ra) e->a_reorder.execute(strm, {{DNNL_ARG_FROM, a_user}, {DNNL_ARG_TO, a_mem}});
  if (e->rb) e->b_reorder.execute(strm, {{DNNL_ARG_FROM, b_user}, {DNNL_ARG_TO, b_mem}});
  std::unordered_map<int, memory> args = {{e->a_arg, a_mem}, {e->b_arg, b_mem}, {e->c_arg, c_mem}};
  if (e->scratch) {
    memory::desc sd({static_cast<memory::dim>(e->scratch)}, memory::data_type::u8,
                    memory::format_tag::a);
    args.emplace(DNNL_ARG_SCRATCHPAD, memory(sd, eng, buf.get(3, e->scratch)));
  }
  e->prim.execute(strm, args);
  if (e->rc) e->c_reorder.execute(strm, {{DNNL_ARG_FROM, c_mem}, {DNNL_ARG_TO, c_user}});
  strm.wait();
}

// Parts of one call, claimed by whichever thread gets there first: the caller and the tasks
// it schedules on XLA's intra-op pool. A task that finds every part claimed returns at once,
// and the caller only ever waits for parts that are running, never for queued tasks, so no
// thread can wait on a task that needs its own thread (no deadlock with a busy pool).
struct Job {
  int parts = 1;
  std::atomic<int> next{0};
  std::atomic<int> remaining{0};
  std::mutex mu;
  std::condition_variable cv;
  std::string error;  // first failure, under mu
  std::function<void(int)> part;  // only called for a claimed part, i.e. while Run waits
};

void Work(const std::shared_ptr<Job>& job) {
  for (int k; (k = job->next.fetch_add(1)) < job->parts;) {
    // Every claimed part is counted as done, failed or not, so the caller never hangs.
    std::string failure;
    try {
      job->part(k);
    } catch (const dnnl::error& err) {
      failure = std::string(err.what()) + " (status " +
                std::to_string(static_cast<int>(err.status)) + ")";
    } catch (const std::exception& err) {
      failure = err.what();
    }
    if (!failure.empty()) {
      std::lock_guard<std::mutex> lock(job->mu);
      if (job->error.empty()) job->error = failure;
    }
    if (job->remaining.fetch_sub(1) == 1) {
      std::lock_guard<std::mutex> lock(job->mu);
      job->cv.notify_all();
    }
  }
}

ffi::Error Run(ffi::ThreadPool pool, Kind kind, ffi::AnyBuffer a, ffi::AnyBuffer b,
               ffi::Result<ffi::AnyBuffer> c, ffi::Span<const int64_t> strides,
               ffi::Span<const int64_t> pad_lo, ffi::Span<const int64_t> pad_hi,
               ffi::Span<const int64_t> dilation, int64_t threads, int64_t parts) {
  if (a.element_type() != ffi::DataType::F32 || b.element_type() != ffi::DataType::F32 ||
      c->element_type() != ffi::DataType::F32)
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "genrepair oneDNN conv: float32 only");
  auto ad = a.dimensions(), bd = b.dimensions(), cd = c->dimensions();
  if (ad.size() != 4 || bd.size() != 4 || cd.size() != 4 || strides.size() != 2 ||
      pad_lo.size() != 2 || pad_hi.size() != 2 || dilation.size() != 2)
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "genrepair oneDNN conv: rank-4 operands and 2 spatial dims expected");
  Geometry g;
  if (kind == kFwd) {  // a = x, b = w, c = y
    g.N = ad[0]; g.H = ad[1]; g.W = ad[2]; g.Ci = ad[3];
    g.Kh = bd[0]; g.Kw = bd[1]; g.Co = bd[3]; g.Ho = cd[1]; g.Wo = cd[2];
  } else if (kind == kBwdData) {  // a = g, b = w, c = dx
    g.N = ad[0]; g.Ho = ad[1]; g.Wo = ad[2]; g.Co = ad[3];
    g.Kh = bd[0]; g.Kw = bd[1]; g.Ci = bd[2]; g.H = cd[1]; g.W = cd[2];
  } else {  // a = x, b = g, c = dw
    g.N = ad[0]; g.H = ad[1]; g.W = ad[2]; g.Ci = ad[3];
    g.Ho = bd[1]; g.Wo = bd[2]; g.Co = bd[3]; g.Kh = cd[0]; g.Kw = cd[1];
  }
  g.strides = {strides[0], strides[1]};
  g.pad_lo = {pad_lo[0], pad_lo[1]};
  g.pad_hi = {pad_hi[0], pad_hi[1]};
  g.dilation = {dilation[0] - 1, dilation[1] - 1};
  if (g.N == 0 || g.Ho == 0 || g.Wo == 0) {
    std::memset(c->untyped_data(), 0, c->size_bytes());
    return ffi::Error::Success();
  }
  // With fewer rows than parts (one image on one device), the rows share the parts'
  // threads as OpenMP threads instead. The weight gradient takes at most kMaxWeightParts
  // parts (each part needs its own gradient buffer, added up afterwards), with the
  // remaining threads as OpenMP threads.
  const int64_t cap = kind == kBwdWeights ? std::min<int64_t>(parts, kMaxWeightParts) : parts;
  const int np = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(cap, g.N)));
  const int nthr = static_cast<int>(std::max<int64_t>(1, threads) *
                                    std::max<int64_t>(1, parts / np));
  // Batch rows split into np contiguous parts (fixed by N and np, whoever runs them, so the
  // result does not depend on scheduling); the weight gradient sums the parts' gradients
  // in part order.
  const size_t in_row = g.H * g.W * g.Ci, out_row = g.Ho * g.Wo * g.Co;
  const size_t a_row = kind == kBwdData ? out_row : in_row;
  const size_t b_row = kind == kBwdWeights ? out_row : 0;  // w is not split
  const size_t c_row = kind == kFwd ? out_row : (kind == kBwdData ? in_row : 0);
  const size_t w_size = g.Kh * g.Kw * g.Ci * g.Co;
  float* pa = static_cast<float*>(a.untyped_data());
  float* pb = static_cast<float*>(b.untyped_data());
  float* pc = static_cast<float*>(c->untyped_data());
  std::vector<float> partial(kind == kBwdWeights ? (np - 1) * w_size : 0);
  auto part = [&](int k) {
    memory::dim lo = g.N / np * k + std::min<memory::dim>(k, g.N % np);
    memory::dim n = g.N / np + (k < g.N % np ? 1 : 0);
    Geometry gk = g;
    gk.N = n;
    float* out = kind == kBwdWeights ? (k == 0 ? pc : partial.data() + (k - 1) * w_size)
                                     : pc + lo * c_row;
    Execute(kind, gk, nthr, pa + lo * a_row, pb + lo * b_row, out);
  };
  try {
    if (np == 1) {
      part(0);
    } else {
      auto job = std::make_shared<Job>();
      job->parts = np;
      job->remaining = np;
      job->part = part;
      for (int i = 1; i < np; ++i) pool.Schedule([job] { Work(job); });
      Work(job);
      std::unique_lock<std::mutex> lock(job->mu);
      job->cv.wait(lock, [&] { return job->remaining.load() == 0; });
      if (!job->error.empty())
        return ffi::Error(ffi::ErrorCode::kInternal, "genrepair oneDNN conv: " + job->error);
      if (kind == kBwdWeights) {
        for (int k = 1; k < np; ++k) {
          const float* q = partial.data() + (k - 1) * w_size;
          for (size_t i = 0; i < w_size; ++i) pc[i] += q[i];
        }
      }
    }
  } catch (const dnnl::error& err) {
    return ffi::Error(ffi::ErrorCode::kInternal,
                      std::string("genrepair oneDNN conv: ") + err.what() + " (status " +
                          std::to_string(static_cast<int>(err.status)) + ")");
  } catch (const std::exception& err) {
    return ffi::Error(ffi::ErrorCode::kInternal,
                      std::string("genrepair oneDNN conv: ") + err.what());
  }
  return ffi::Error::Success();
}

ffi::Error Fwd(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> c,
               ffi::Span<const int64_t> s, ffi::Span<const int64_t> lo,
               ffi::Span<const int64_t> hi, ffi::Span<const int64_t> d, int64_t t, int64_t n,
               ffi::ThreadPool pool) {
  return Run(pool, kFwd, a, b, c, s, lo, hi, d, t, n);
}
ffi::Error BwdData(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> c,
                   ffi::Span<const int64_t> s, ffi::Span<const int64_t> lo,
                   ffi::Span<const int64_t> hi, ffi::Span<const int64_t> d, int64_t t, int64_t n,
                   ffi::ThreadPool pool) {
  return Run(pool, kBwdData, a, b, c, s, lo, hi, d, t, n);
}
ffi::Error BwdWeights(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> c,
                      ffi::Span<const int64_t> s, ffi::Span<const int64_t> lo,
                      ffi::Span<const int64_t> hi, ffi::Span<const int64_t> d, int64_t t, int64_t n,
                      ffi::ThreadPool pool) {
  return Run(pool, kBwdWeights, a, b, c, s, lo, hi, d, t, n);
}

}  // namespace

#define GENREPAIR_BIND                                  \
  ffi::Ffi::Bind()                                      \
      .Arg<ffi::AnyBuffer>()                            \
      .Arg<ffi::AnyBuffer>()                            \
      .Ret<ffi::AnyBuffer>()                            \
      .Attr<ffi::Span<const int64_t>>("strides")        \
      .Attr<ffi::Span<const int64_t>>("pad_lo")         \
      .Attr<ffi::Span<const int64_t>>("pad_hi")         \
      .Attr<ffi::Span<const int64_t>>("dilation")       \
      .Attr<int64_t>("threads")                         \
      .Attr<int64_t>("parts")                           \
      .Ctx<ffi::ThreadPool>()

XLA_FFI_DEFINE_HANDLER_SYMBOL(GenrepairConvFwd, Fwd, GENREPAIR_BIND);
XLA_FFI_DEFINE_HANDLER_SYMBOL(GenrepairConvBwdData, BwdData, GENREPAIR_BIND);
XLA_FFI_DEFINE_HANDLER_SYMBOL(GenrepairConvBwdWeights, BwdWeights, GENREPAIR_BIND);

extern "C" const char* genrepair_onednn_version() {
  static std::string v = [] {
    const dnnl_version_t* ver = dnnl_version();
    return std::to_string(ver->major) + "." + std::to_string(ver->minor) + "." +
           std::to_string(ver->patch);
  }();
  return v.c_str();
}
