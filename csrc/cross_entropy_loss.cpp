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
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

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
Tensor row_grad(const Tensor& grad_loss, const Tensor& count, int64_t reduction, int64_t rows) {
  if (!grad_loss.defined()) return {};
  Tensor g = grad_loss.to(at::kFloat);
  if (reduction == kNone) return g;
  if (reduction == kMean) g = g.div(count);
  return g.expand({rows});
}

// In place over the logits when asked and possible; bumps their version counter so any other
// autograd node that saved these logits fails loudly instead of reading our gradient.
template <typename OutOfPlace, typename InPlace>
Tensor logits_grad(const Tensor& logits, bool inplace_backward, const OutOfPlace& out_of_place,
                   const InPlace& in_place) {
  if (inplace_backward && logits.is_contiguous()) {
    in_place();
    torch::autograd::impl::bump_version(logits);
    return logits;
  }
  return out_of_place();
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
  static variable_list forward(AutogradContext* ctx, const Tensor& logits, const Tensor& target,
                               double label_smoothing, int64_t ignore_index, int64_t reduction,
                               bool inplace_backward) {
    static const auto op = op_handle<LossOutputs(const Tensor&, const Tensor&, double, int64_t, int64_t, bool)>(
        "classy_fast::cross_entropy_loss");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [loss, lse, count] = op.call(logits, target, label_smoothing, ignore_index, reduction, inplace_backward);
    ctx->save_for_backward({logits, target, lse, count});
    ctx->saved_data["label_smoothing"] = label_smoothing;
    ctx->saved_data["ignore_index"] = ignore_index;
    ctx->saved_data["reduction"] = reduction;
    ctx->saved_data["inplace_backward"] = inplace_backward;
    ctx->mark_non_differentiable({lse, count});
    return {loss, lse, count};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &logits = saved[0], &target = saved[1], &lse = saved[2], &count = saved[3];
    const double eps = ctx->saved_data["label_smoothing"].toDouble();
    const int64_t ignore_index = ctx->saved_data["ignore_index"].toInt();
    const Tensor g = row_grad(grads[0], count, ctx->saved_data["reduction"].toInt(), logits.size(0));
    if (!g.defined()) return {Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
    static const auto bwd =
        op_handle<Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&, double, int64_t)>(
            "classy_fast::cross_entropy_bwd");
    static const auto bwd_ = op_handle<void(const Tensor&, const Tensor&, const Tensor&, const Tensor&, double,
                                            int64_t)>("classy_fast::cross_entropy_bwd_");
    const Tensor grad = logits_grad(
        logits, ctx->saved_data["inplace_backward"].toBool(),
        [&] { return bwd.call(g, logits, target, lse, eps, ignore_index); },
        [&] { bwd_.call(g, logits, target, lse, eps, ignore_index); });
    return {grad, Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

LossOutputs cross_entropy_loss_autograd(const Tensor& logits, const Tensor& target, double label_smoothing,
                                        int64_t ignore_index, int64_t reduction, bool inplace_backward) {
  const variable_list out =
      CrossEntropyLoss::apply(logits, target, label_smoothing, ignore_index, reduction, inplace_backward);
  return {out[0], out[1], out[2]};
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

struct MixupCrossEntropyLoss : public torch::autograd::Function<MixupCrossEntropyLoss> {
  static variable_list forward(AutogradContext* ctx, const Tensor& logits, const Tensor& target_a,
                               const Tensor& target_b, const Tensor& lam, double label_smoothing, int64_t reduction,
                               bool inplace_backward) {
    static const auto op = op_handle<LossOutputs(const Tensor&, const Tensor&, const Tensor&, const Tensor&, double,
                                                 int64_t, bool)>("classy_fast::mixup_cross_entropy_loss");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [loss, lse, count] = op.call(logits, target_a, target_b, lam, label_smoothing, reduction, inplace_backward);
    ctx->save_for_backward({logits, target_a, target_b, lam, lse, count});
    ctx->saved_data["label_smoothing"] = label_smoothing;
    ctx->saved_data["reduction"] = reduction;
    ctx->saved_data["inplace_backward"] = inplace_backward;
    ctx->mark_non_differentiable({lse, count});
    return {loss, lse, count};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &logits = saved[0], &target_a = saved[1], &target_b = saved[2], &lam = saved[3], &lse = saved[4],
                 &count = saved[5];
    const double eps = ctx->saved_data["label_smoothing"].toDouble();
    const Tensor g = row_grad(grads[0], count, ctx->saved_data["reduction"].toInt(), logits.size(0));
    if (!g.defined()) return {Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
    Tensor grad_lam;
    if (ctx->needs_input_grad(3)) {
      // d loss_i / d lam = CE_a - CE_b = (1 - eps) (x_b - x_a): the smoothing terms cancel.
      // Gathered before the backward kernel, which may overwrite the logits.
      const Tensor x_a = logits.gather(1, target_a.unsqueeze(1)).squeeze(1).to(at::kFloat);
      const Tensor x_b = logits.gather(1, target_b.unsqueeze(1)).squeeze(1).to(at::kFloat);
      const Tensor d = g.mul(x_b.sub(x_a)).sum().mul(1.0 - eps);
      grad_lam = d.to(lam.options()).reshape(lam.sizes());
    }
    static const auto bwd = op_handle<Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                             const Tensor&, const Tensor&, double)>(
        "classy_fast::mixup_cross_entropy_bwd");
    static const auto bwd_ = op_handle<void(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                            const Tensor&, const Tensor&, double)>(
        "classy_fast::mixup_cross_entropy_bwd_");
    const Tensor grad = logits_grad(
        logits, ctx->saved_data["inplace_backward"].toBool(),
        [&] { return bwd.call(g, logits, target_a, target_b, lam, lse, eps); },
        [&] { bwd_.call(g, logits, target_a, target_b, lam, lse, eps); });
    return {grad, Tensor(), Tensor(), grad_lam, Tensor(), Tensor(), Tensor()};
  }
};

LossOutputs mixup_cross_entropy_loss_autograd(const Tensor& logits, const Tensor& target_a, const Tensor& target_b,
                                              const Tensor& lam, double label_smoothing, int64_t reduction,
                                              bool inplace_backward) {
  const variable_list out =
      MixupCrossEntropyLoss::apply(logits, target_a, target_b, lam, label_smoothing, reduction, inplace_backward);
  return {out[0], out[1], out[2]};
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
  static variable_list forward(AutogradContext* ctx, const Tensor& logits, const Tensor& target,
                               double label_smoothing, int64_t reduction, bool inplace_backward) {
    static const auto op = op_handle<LossOutputs(const Tensor&, const Tensor&, double, int64_t, bool)>(
        "classy_fast::soft_cross_entropy_loss");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [loss, lse, count] = op.call(logits, target, label_smoothing, reduction, inplace_backward);
    ctx->save_for_backward({logits, target, lse, count});
    ctx->saved_data["label_smoothing"] = label_smoothing;
    ctx->saved_data["reduction"] = reduction;
    ctx->saved_data["inplace_backward"] = inplace_backward;
    ctx->mark_non_differentiable({lse, count});
    return {loss, lse, count};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &logits = saved[0], &target = saved[1], &lse = saved[2], &count = saved[3];
    const double eps = ctx->saved_data["label_smoothing"].toDouble();
    const Tensor g = row_grad(grads[0], count, ctx->saved_data["reduction"].toInt(), logits.size(0));
    if (!g.defined()) return {Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
    static const auto bwd = op_handle<Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&, double)>(
        "classy_fast::soft_cross_entropy_bwd");
    static const auto bwd_ = op_handle<void(const Tensor&, const Tensor&, const Tensor&, const Tensor&, double)>(
        "classy_fast::soft_cross_entropy_bwd_");
    const Tensor grad = logits_grad(
        logits, ctx->saved_data["inplace_backward"].toBool(),
        [&] { return bwd.call(g, logits, target, lse, eps); }, [&] { bwd_.call(g, logits, target, lse, eps); });
    // Soft targets are data here (as in F.cross_entropy's fused path): no gradient for them.
    return {grad, Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

LossOutputs soft_cross_entropy_loss_autograd(const Tensor& logits, const Tensor& target, double label_smoothing,
                                             int64_t reduction, bool inplace_backward) {
  const variable_list out = SoftCrossEntropyLoss::apply(logits, target, label_smoothing, reduction, inplace_backward);
  return {out[0], out[1], out[2]};
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
