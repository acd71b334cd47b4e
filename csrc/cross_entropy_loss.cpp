// The user-facing cross-entropy losses (classy_fast::cross_entropy_loss, mixup_cross_entropy_loss,
// soft_cross_entropy_loss): the per-row forward kernel, the reduction, and the autograd formula,
// all in C++.
//
// Why C++ and not torch.library.register_autograd: at C = 1000 a loss step moves a few MB and
// its time is host overhead. A Python autograd formula, a Python-side reduction (sum, ne, sum,
// div) and its backward cost more than the two kernels; here the forward is the row kernel plus
// one reduce_loss_rows launch, the backward one scale launch plus the row kernel, and the
// Python wrapper makes a single dispatcher call.
//
// Two registrations per op: the forward for CPU and CUDA (inference mode, and the kernel the
// autograd one redispatches to), and Autograd (a torch::autograd::Function whose
// forward redispatches below autograd and whose backward calls the *_bwd / *_bwd_ ops). Every op
// called here goes through the dispatcher, so FakeTensor, torch.compile and opcheck see the
// CPU/CUDA kernels' fake implementations (classy_fast/ops/cross_entropy.py).
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/one_hot.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <limits>
#include <tuple>

namespace classy_fast {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using LossOutputs = std::tuple<Tensor, Tensor, Tensor>;  // loss, lse, count

enum Reduction : int64_t { kNone = 0, kMean = 1, kSum = 2 };  // torch's at::Reduction values

template <typename Signature>
c10::TypedOperatorHandle<Signature> op_handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

void check_reduction(int64_t reduction, const char* op) {
  TORCH_CHECK(reduction == kNone || reduction == kMean || reduction == kSum, op,
              ": reduction must be 0 (none), 1 (mean) or 2 (sum), got ", reduction);
}

// (loss, count) from the per-row losses; rows counted are those whose target != ignore_index.
std::tuple<Tensor, Tensor> reduce_rows(const Tensor& rows, const std::optional<Tensor>& target, int64_t ignore_index,
                                       int64_t reduction) {
  if (reduction == kNone) return {rows, rows.new_empty({0})};
  static const auto reduce =
      op_handle<std::tuple<Tensor, Tensor>(const Tensor&, const std::optional<Tensor>&, int64_t, bool)>(
          "classy_fast::reduce_loss_rows");
  return reduce.call(rows, target, ignore_index, reduction == kMean);
}

// The gradient per row the backward kernels take: d loss / d row_loss (stride 0 when reduced).
// The batch size stays symbolic so torch.compile's traced backward does not specialise on it.
Tensor row_grad(const Tensor& grad_loss, const Tensor& count, int64_t reduction, const Tensor& logits) {
  Tensor g = grad_loss.to(at::kFloat);
  if (reduction == kNone) return g;
  if (reduction == kMean) g = g.div(count);
  return g.expand_symint({logits.sym_size(0)});
}

// What every backward below shares. The kernels' gradient is not differentiable again. Without
// create_graph it is computed by the kernels, without recording; with create_graph=True (input-
// gradient penalties, double backprop) the backward computes the same gradient with differentiable
// ATen ops instead (graph_logits_grad), so second derivatives through it are right: a gradient
// that silently dropped the loss's own Hessian term would be wrong without any error. The in-place
// path, which hands back the logits tensor itself, is taken only when no graph is being built, and
// never over a user's tensor: a leaf, or a view of a leaf (its .grad would alias its data).
struct BackwardContext {
  Tensor g;  // undefined: no gradient flows to the loss, or none is needed for the logits
  bool inplace;
  bool create_graph;
};

bool owned_by_user(const Tensor& t) { return t.is_leaf() || (t.is_view() && t._base().is_leaf()); }

BackwardContext backward_context(AutogradContext* ctx, const variable_list& grads, const Tensor& logits,
                                 const Tensor& count, bool logits_need_grad) {
  const bool create_graph = at::GradMode::is_enabled();
  if (!grads[0].defined() || !logits_need_grad) return {Tensor(), false, create_graph};
  const bool inplace = ctx->saved_data["inplace_backward"].toBool() && !create_graph && logits.is_contiguous() &&
                       !owned_by_user(logits);
  return {row_grad(grads[0], count, ctx->saved_data["reduction"].toInt(), logits), inplace, create_graph};
}

// d loss / d logits = g_i (softmax(x_i) * sum(q_i) - q_i) for the per-row target distribution q
// (smoothed, zero on ignored rows), recorded for create_graph=True callers.
Tensor graph_logits_grad(const Tensor& g, const Tensor& logits, const Tensor& q) {
  const Tensor p = logits.to(at::kFloat).softmax(1);
  return g.unsqueeze(1).mul(p.mul(q.sum(1, true)).sub(q)).to(logits.scalar_type());
}

// (1 - eps) onehot(t) + eps / C, as float rows; labels outside [0, C) fail in one_hot with its message.
Tensor smoothed_one_hot(const Tensor& target, int64_t classes, double eps) {
  return at::one_hot(target.to(at::kLong), classes).to(at::kFloat).mul(1.0 - eps).add(eps / classes);
}

// In place over the logits when allowed; bumps their version counter so any other autograd node
// that saved these logits fails loudly instead of reading our gradient.
template <typename OutOfPlace, typename InPlace>
Tensor logits_grad(const Tensor& logits, bool inplace, const OutOfPlace& out_of_place, const InPlace& in_place) {
  at::NoGradGuard no_grad;
  if (inplace) {
    in_place();
    torch::autograd::impl::bump_version(logits);
    return logits;
  }
  return out_of_place();
}

// lse and count come out of the op but not out of the autograd Function: marking outputs
// non-differentiable breaks compiled autograd, and their (always zero) gradients would cost two
// fill launches per backward. The Function's forward hands them back through this struct.
struct Extras {
  Tensor lse, count;
};

void save_common(AutogradContext* ctx, int64_t reduction, bool inplace_backward, double label_smoothing) {
  ctx->set_materialize_grads(false);
  ctx->saved_data["label_smoothing"] = label_smoothing;
  ctx->saved_data["reduction"] = reduction;
  ctx->saved_data["inplace_backward"] = inplace_backward;
}

// ------------------------------------------------------------------------------ index targets

LossOutputs cross_entropy_loss(const Tensor& logits, const Tensor& target, double label_smoothing,
                               int64_t ignore_index, int64_t reduction, bool inplace_backward) {
  check_reduction(reduction, "classy_fast::cross_entropy_loss");
  static const auto fwd = op_handle<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, double, int64_t, bool)>(
      "classy_fast::cross_entropy_fwd");
  auto [rows, lse] = fwd.call(logits, target, label_smoothing, ignore_index, inplace_backward);
  auto [loss, count] = reduce_rows(rows, target, ignore_index, reduction);
  return {loss, lse, count};
}

struct CrossEntropyLoss : public torch::autograd::Function<CrossEntropyLoss> {
  static Tensor forward(AutogradContext* ctx, const Tensor& logits, const Tensor& target, double label_smoothing,
                        int64_t ignore_index, int64_t reduction, bool inplace_backward, Extras* extras) {
    static const auto op = op_handle<LossOutputs(const Tensor&, const Tensor&, double, int64_t, int64_t, bool)>(
        "classy_fast::cross_entropy_loss");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [loss, lse, count] = op.call(logits, target, label_smoothing, ignore_index, reduction, inplace_backward);
    ctx->save_for_backward({logits, target, lse, count});
    save_common(ctx, reduction, inplace_backward, label_smoothing);
    ctx->saved_data["ignore_index"] = ignore_index;
    *extras = {lse, count};
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &logits = saved[0], &target = saved[1], &lse = saved[2], &count = saved[3];
    const BackwardContext b = backward_context(ctx, grads, logits, count, ctx->needs_input_grad(0));
    if (!b.g.defined()) return variable_list(7);
    const double eps = ctx->saved_data["label_smoothing"].toDouble();
    const int64_t ignore_index = ctx->saved_data["ignore_index"].toInt();
    static const auto bwd =
        op_handle<Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&, double, int64_t)>(
            "classy_fast::cross_entropy_bwd");
    static const auto bwd_ = op_handle<void(const Tensor&, const Tensor&, const Tensor&, const Tensor&, double,
                                            int64_t)>("classy_fast::cross_entropy_bwd_");
    variable_list out(7);
    if (b.create_graph) {
      const Tensor valid = target.ne(ignore_index);
      const Tensor q = smoothed_one_hot(target.masked_fill(valid.logical_not(), 0), logits.size(1), eps);
      out[0] = graph_logits_grad(b.g, logits, q.mul(valid.unsqueeze(1)));
      return out;
    }
    out[0] = logits_grad(
        logits, b.inplace, [&] { return bwd.call(b.g, logits, target, lse, eps, ignore_index); },
        [&] { bwd_.call(b.g, logits, target, lse, eps, ignore_index); });
    return out;
  }
};

LossOutputs cross_entropy_loss_autograd(const Tensor& logits, const Tensor& target, double label_smoothing,
                                        int64_t ignore_index, int64_t reduction, bool inplace_backward) {
  Extras extras;
  Tensor loss =
      CrossEntropyLoss::apply(logits, target, label_smoothing, ignore_index, reduction, inplace_backward, &extras);
  return {loss, extras.lse, extras.count};
}

// ------------------------------------------------------------------------------------- mixup

LossOutputs mixup_cross_entropy_loss(const Tensor& logits, const Tensor& target_a, const Tensor& target_b,
                                     const Tensor& lam, double label_smoothing, int64_t reduction,
                                     bool inplace_backward) {
  check_reduction(reduction, "classy_fast::mixup_cross_entropy_loss");
  static const auto fwd = op_handle<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                                               const Tensor&, double, bool)>(
      "classy_fast::mixup_cross_entropy_fwd");
  auto [rows, lse] = fwd.call(logits, target_a, target_b, lam, label_smoothing, inplace_backward);
  auto [loss, count] = reduce_rows(rows, std::nullopt, 0, reduction);
  return {loss, lse, count};
}

// d loss_i / d lam = CE_a - CE_b = (1 - eps) (x_b - x_a): the smoothing terms cancel. A label out
// of range (which the CUDA forward turns into a NaN row rather than a device assert) gives NaN
// here too instead of an out-of-bounds gather.
Tensor mixup_lam_grad(const Tensor& g, const Tensor& logits, const Tensor& target_a, const Tensor& target_b,
                      const Tensor& lam, double eps) {
  // Recorded under create_graph=True (the ops are differentiable), plain otherwise.
  const int64_t classes = logits.size(1);
  auto picked = [&](const Tensor& t) {
    const Tensor valid = t.ge(0).logical_and(t.lt(classes));
    const Tensor x = logits.gather(1, t.clamp(0, classes - 1).unsqueeze(1)).squeeze(1).to(at::kFloat);
    return x.masked_fill(valid.logical_not(), std::numeric_limits<float>::quiet_NaN());
  };
  const Tensor d = g.mul(picked(target_b).sub(picked(target_a))).sum().mul(1.0 - eps);
  return d.to(lam.options()).reshape(lam.sizes());  // a CPU lam with CUDA logits: one device->host copy
}

struct MixupCrossEntropyLoss : public torch::autograd::Function<MixupCrossEntropyLoss> {
  static Tensor forward(AutogradContext* ctx, const Tensor& logits, const Tensor& target_a, const Tensor& target_b,
                        const Tensor& lam, double label_smoothing, int64_t reduction, bool inplace_backward,
                        Extras* extras) {
    static const auto op = op_handle<LossOutputs(const Tensor&, const Tensor&, const Tensor&, const Tensor&, double,
                                                 int64_t, bool)>("classy_fast::mixup_cross_entropy_loss");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [loss, lse, count] = op.call(logits, target_a, target_b, lam, label_smoothing, reduction, inplace_backward);
    ctx->save_for_backward({logits, target_a, target_b, lam, lse, count});
    save_common(ctx, reduction, inplace_backward, label_smoothing);
    *extras = {lse, count};
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &logits = saved[0], &target_a = saved[1], &target_b = saved[2], &lam = saved[3], &lse = saved[4],
                 &count = saved[5];
    const double eps = ctx->saved_data["label_smoothing"].toDouble();
    variable_list out(8);
    if (!grads[0].defined()) return out;
    if (ctx->needs_input_grad(3)) {  // before the logits gradient, which may overwrite the logits
      const Tensor g = row_grad(grads[0], count, ctx->saved_data["reduction"].toInt(), logits);
      out[3] = mixup_lam_grad(g, logits, target_a, target_b, lam, eps);
    }
    const BackwardContext b = backward_context(ctx, grads, logits, count, ctx->needs_input_grad(0));
    if (!b.g.defined()) return out;
    static const auto bwd = op_handle<Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                             const Tensor&, const Tensor&, double)>(
        "classy_fast::mixup_cross_entropy_bwd");
    static const auto bwd_ = op_handle<void(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                            const Tensor&, const Tensor&, double)>(
        "classy_fast::mixup_cross_entropy_bwd_");
    if (b.create_graph) {
      const int64_t classes = logits.size(1);
      const Tensor w = lam.to(at::kFloat).reshape({});
      const Tensor q = smoothed_one_hot(target_a, classes, eps).mul(w).add(
          smoothed_one_hot(target_b, classes, eps).mul(w.neg().add(1.0)));
      out[0] = graph_logits_grad(b.g, logits, q);
      return out;
    }
    out[0] = logits_grad(
        logits, b.inplace, [&] { return bwd.call(b.g, logits, target_a, target_b, lam, lse, eps); },
        [&] { bwd_.call(b.g, logits, target_a, target_b, lam, lse, eps); });
    return out;
  }
};

LossOutputs mixup_cross_entropy_loss_autograd(const Tensor& logits, const Tensor& target_a, const Tensor& target_b,
                                              const Tensor& lam, double label_smoothing, int64_t reduction,
                                              bool inplace_backward) {
  Extras extras;
  Tensor loss = MixupCrossEntropyLoss::apply(logits, target_a, target_b, lam, label_smoothing, reduction,
                                             inplace_backward, &extras);
  return {loss, extras.lse, extras.count};
}

// ------------------------------------------------------------------------------ soft targets

LossOutputs soft_cross_entropy_loss(const Tensor& logits, const Tensor& target, double label_smoothing,
                                    int64_t reduction, bool inplace_backward) {
  check_reduction(reduction, "classy_fast::soft_cross_entropy_loss");
  static const auto fwd = op_handle<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, double, bool)>(
      "classy_fast::soft_cross_entropy_fwd");
  auto [rows, lse] = fwd.call(logits, target, label_smoothing, inplace_backward);
  auto [loss, count] = reduce_rows(rows, std::nullopt, 0, reduction);
  return {loss, lse, count};
}

struct SoftCrossEntropyLoss : public torch::autograd::Function<SoftCrossEntropyLoss> {
  static Tensor forward(AutogradContext* ctx, const Tensor& logits, const Tensor& target, double label_smoothing,
                        int64_t reduction, bool inplace_backward, Extras* extras) {
    static const auto op = op_handle<LossOutputs(const Tensor&, const Tensor&, double, int64_t, bool)>(
        "classy_fast::soft_cross_entropy_loss");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [loss, lse, count] = op.call(logits, target, label_smoothing, reduction, inplace_backward);
    ctx->save_for_backward({logits, target, lse, count});
    save_common(ctx, reduction, inplace_backward, label_smoothing);
    *extras = {lse, count};
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &logits = saved[0], &target = saved[1], &lse = saved[2], &count = saved[3];
    const BackwardContext b = backward_context(ctx, grads, logits, count, ctx->needs_input_grad(0));
    if (!b.g.defined()) return variable_list(6);
    const double eps = ctx->saved_data["label_smoothing"].toDouble();
    static const auto bwd = op_handle<Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&, double)>(
        "classy_fast::soft_cross_entropy_bwd");
    static const auto bwd_ = op_handle<void(const Tensor&, const Tensor&, const Tensor&, const Tensor&, double)>(
        "classy_fast::soft_cross_entropy_bwd_");
    variable_list out(6);
    if (b.create_graph) {  // torch's smoothing of soft targets: (1 - eps) t + eps / C
      out[0] = graph_logits_grad(b.g, logits, target.to(at::kFloat).mul(1.0 - eps).add(eps / logits.size(1)));
      return out;
    }
    out[0] = logits_grad(
        logits, b.inplace, [&] { return bwd.call(b.g, logits, target, lse, eps); },
        [&] { bwd_.call(b.g, logits, target, lse, eps); });
    return out;
  }
};

LossOutputs soft_cross_entropy_loss_autograd(const Tensor& logits, const Tensor& target, double label_smoothing,
                                             int64_t reduction, bool inplace_backward) {
  // The kernels give soft targets no gradient; torch's composite F.cross_entropy would. Refuse
  // rather than silently drop it.
  TORCH_CHECK(!target.requires_grad(), "classy_fast::soft_cross_entropy_loss: the soft target requires grad, but the "
              "fused kernels do not differentiate with respect to it; pass target.detach() or use impl='reference'");
  Extras extras;
  Tensor loss = SoftCrossEntropyLoss::apply(logits, target, label_smoothing, reduction, inplace_backward, &extras);
  return {loss, extras.lse, extras.count};
}

}  // namespace
}  // namespace classy_fast

// The forward is device-agnostic (it calls the device's row and reduce kernels), registered for
// the devices those kernels exist for. Not CompositeExplicitAutograd: that would also claim the
// Meta key, where the Python fake implementations belong.
#define CLASSY_FAST_REGISTER_LOSS_FORWARDS(m)                                  \
  m.impl("cross_entropy_loss", &classy_fast::cross_entropy_loss);             \
  m.impl("mixup_cross_entropy_loss", &classy_fast::mixup_cross_entropy_loss); \
  m.impl("soft_cross_entropy_loss", &classy_fast::soft_cross_entropy_loss)

TORCH_LIBRARY_IMPL(classy_fast, CPU, m) { CLASSY_FAST_REGISTER_LOSS_FORWARDS(m); }
#ifdef CLASSY_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(classy_fast, CUDA, m) { CLASSY_FAST_REGISTER_LOSS_FORWARDS(m); }
#endif

TORCH_LIBRARY_IMPL(classy_fast, Autograd, m) {
  m.impl("cross_entropy_loss", &classy_fast::cross_entropy_loss_autograd);
  m.impl("mixup_cross_entropy_loss", &classy_fast::mixup_cross_entropy_loss_autograd);
  m.impl("soft_cross_entropy_loss", &classy_fast::soft_cross_entropy_loss_autograd);
}
