"""A hand-derived forward and backward pass of the ELBO for the common MLP VAE (no autograd).

The trainer uses it automatically when it applies (``fast_path_reason`` returns "") and
``train.fast_path`` is on; otherwise the autograd path of ``step.py`` runs. Both compute the same
numbers to float rounding (tests/test_fastpath.py checks the bound, its terms and every gradient
against autograd through ``objectives.elbo``), and both consume the same noise: the binarization
uniforms and eps ~ N(0, I) drawn by ``step.draw_batch`` from the trainer's generator.

The model it covers: q(z|x) = N(mu(x), diag(exp(log_var(x)))) from an MLP encoder, p(z) = N(0, I),
p(x|z) = prod_d Bernoulli(x_d; sigmoid(l_d(z))) from an MLP decoder (or a Gaussian with a fixed
sigma and mean l_d or sigmoid(l_d), see ``_log_likelihood_and_delta``), objective
    bound(x) = (1/L) sum_l log p(x | z_l) - beta * KL(q(z|x) || p(z)),   z_l = mu + exp(log_var / 2) * eps_l,
per example in nats, with the closed-form KL = 1/2 sum_j (mu_j^2 + exp(log_var_j) - 1 - log_var_j).

The gradients of loss = -scale * sum_b bound(x_b) (scale = 1 / batch size) are written straight
into each parameter's ``.grad`` by the chain rule:
    d loss / d l          = scale / L * (sigmoid(l) - x)                (Bernoulli with logits l)
    d loss / d a          = d loss / d h * act'(a), act' from the output h (tanh: 1 - h^2)
    d loss / d mu         = sum_l d loss / d z_l + scale * beta * mu
    d loss / d log_var    = sum_l d loss / d z_l * eps_l * exp(log_var / 2) / 2 + scale * beta * (exp(log_var) - 1) / 2
    d loss / d W = delta^T h_in,  d loss / d b = sum_b delta,  d loss / d h_in = delta W  (Linear: y = h_in W^T + b)
With torch's products every product writes into a buffer allocated once per batch size
(``torch.addmm``/``mm`` with ``out=``); oneDNN's (``gemm``, float32 on x86 CPUs) return new tensors and
apply tanh or ReLU inside the product.

Binary data (the Bernoulli likelihood's support) make the two products of the first encoder layer
sparse: with S_b = {i : x_bi = 1},
    (x W^T)_b = sum_{i in S_b} W[:, i]      and      (delta^T x)[:, i] = sum_{b : i in S_b} delta_b,
so both are sums of gathered rows (``embedding_bag`` in "sum" mode over W^T and over delta),
about 14% of the dense products' arithmetic on dynamically binarized MNIST. The sums are the same
numbers added in another order (float rounding only); ``SparseBinaryInput`` does it, and the dense
products are used when more than ``MAX_SPARSE_DENSITY`` of the pixels are on. The gathers are
memory-bound: they beat torch's (MKL's) dense products on this project's AMD CPU, but not oneDNN's,
so by default they are used only where the products do not go to oneDNN (``gemm``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aevb.models.decoders import Decoder
from aevb.models.encoders import GaussianEncoder
from aevb.models.likelihoods import BernoulliLikelihood, GaussianLikelihood
from aevb.models.nets import MLP
from aevb.models.priors import StandardNormalPrior
from aevb.speed import gemm
from aevb.training.optim import add_prior_gradient, clip_or_check_gradients, step_optimizer
from aevb.training.step import describe_nonfinite, first_bad_gradient

_aten = torch.ops.aten


def _tanh_backward(grad: torch.Tensor, h: torch.Tensor) -> None:
    _aten.tanh_backward.grad_input(grad, h, grad_input=grad)  # grad *= 1 - h^2


def _relu_backward(grad: torch.Tensor, h: torch.Tensor) -> None:
    _aten.threshold_backward.grad_input(grad, h, 0.0, grad_input=grad)  # grad *= (h > 0)


def _elu_backward(grad: torch.Tensor, h: torch.Tensor) -> None:
    _aten.elu_backward.grad_input(grad, 1.0, 1.0, 1.0, True, h, grad_input=grad)  # grad *= 1 if h > 0 else h + 1


def _softplus_backward(grad: torch.Tensor, h: torch.Tensor) -> None:
    grad.mul_(torch.expm1(h.neg())).neg_()  # softplus'(a) = sigmoid(a) = 1 - exp(-h)


def _tanh_from_double_(a2: torch.Tensor) -> torch.Tensor:
    """tanh(a) = 2 sigmoid(2a) - 1 in place, given 2a (torch's CPU sigmoid is ~5x faster than its tanh;
    in float32 the result differs from tanh by at most 1.8e-7 over [-20, 20])."""
    return torch.sigmoid(a2, out=a2).mul_(2.0).sub_(1.0)


def _softplus_(a: torch.Tensor) -> torch.Tensor:
    return torch._C._nn.softplus(a, 1.0, 20.0, out=a)


# activation module type -> (in-place forward, in-place backward from the output h, pre-activation factor,
# the name of the same activation applied inside a ``gemm.linear`` product or None): the forward is given
# factor * a (the factor is folded into the torch backend's matrix product that makes a); with the oneDNN
# backend the product applies the named activation itself (factor 1 where there is none)
ACTIVATIONS = {
    nn.Tanh: (_tanh_from_double_, _tanh_backward, 2.0, "tanh"),
    nn.ReLU: (torch.relu_, _relu_backward, 1.0, "relu"),
    nn.ELU: (lambda a: torch._C._nn.elu_(a), _elu_backward, 1.0, None),
    nn.Softplus: (_softplus_, _softplus_backward, 1.0, None),
}


def _default_activation(m: nn.Module) -> bool:
    if isinstance(m, nn.ELU):
        return m.alpha == 1.0
    if isinstance(m, nn.Softplus):
        return m.beta == 1.0 and m.threshold == 20.0
    return type(m) in ACTIVATIONS


def mlp_layers(net: nn.Module) -> tuple[list[nn.Linear], list] | None:
    """(linears, activations) of a plain ``nets.MLP`` (Linear, act, ..., Linear), else None."""
    if type(net) is not MLP:
        return None
    mods = list(net)
    linears, acts = mods[0::2], mods[1::2]
    if not all(type(m) is nn.Linear and m.bias is not None for m in linears):
        return None
    if not all(type(m) in ACTIVATIONS and _default_activation(m) for m in acts):
        return None
    return linears, [ACTIVATIONS[type(m)] for m in acts]


def supported_likelihood(likelihood) -> bool:
    """Bernoulli, or Gaussian with a fixed sigma (either mean link)."""
    if type(likelihood) is BernoulliLikelihood:
        return True
    return type(likelihood) is GaussianLikelihood and likelihood.mode == "fixed" and likelihood.params_per_dim == 1


def fast_path_reason(model: nn.Module, cfg, world_size: int = 1) -> str:
    """Why the fast path does not apply to this model and config ("" when it does)."""
    t, o = cfg.train, cfg.objective
    checks = [
        (not getattr(t, "fast_path", True), "train.fast_path is off"),
        (world_size > 1, "distributed training (DDP) uses autograd"),
        (t.compile, "train.compile is on"),
        (o.name != "elbo" or o.kl != "analytic", f"objective {o.name} with kl={o.kl} (needs elbo, analytic)"),
        (type(getattr(model, "encoder", None)) is not GaussianEncoder
         or mlp_layers(model.encoder.net) is None, "the encoder is not a GaussianEncoder over an MLP"),
        (type(getattr(model, "decoder", None)) is not Decoder
         or mlp_layers(model.decoder.net) is None, "the decoder is not an MLP"),
        (type(getattr(model, "prior_module", None)) is not StandardNormalPrior, "the prior is not standard_normal"),
        (not supported_likelihood(getattr(model, "likelihood_module", None)),
         "the likelihood is not bernoulli or gaussian with a fixed sigma"),
        (not all(p.requires_grad for p in model.parameters()), "some parameters are frozen"),
        (next(model.parameters()).device.type != "cpu", "the fast path is CPU-only (untested on other devices)"),
    ]
    return next((why for bad, why in checks if bad), "")


_NUMPY_FLOATS = (torch.float32, torch.float64, torch.float16)  # x dtypes numpy can view for the index building
MAX_SPARSE_DENSITY = 0.2  # above this fraction of ones the dense products are about as fast (measured: 784-500, batch 100)


class SparseBinaryInput:
    """The first encoder layer's two products for binary x (B, D), as gathers of rows.

    Forward: a = x W^T, row b the sum of the rows of W^T (columns of W) with x_bi = 1. Backward:
    d loss / d W = delta^T x, its transpose's row i the sum of the rows delta_b with x_bi = 1. Both
    are ``torch.nn.functional.embedding_bag`` sums.

    For the gathers to read rows, the weight (H, D) is stored column-major: the Parameter keeps its
    identity, shape and values, only its strides change (``weight.t()`` is contiguous), and its
    ``.grad`` gets the same strides. Checkpoints are written contiguous and read back by copying,
    so they are unaffected. Optimizer state must share the weight's layout (torch's fused Adam
    kernel reads a parameter, its gradient and its moments in one element order):
    ``optim.step_optimizer`` re-lays any state tensor that does not (for example one just read
    from a checkpoint) and hands the kernel contiguous views.
    """

    def __init__(self, linear: nn.Linear):
        self.linear = linear
        w = linear.weight
        if not w.t().is_contiguous():
            w.data = w.data.t().contiguous().t()
            w.grad = None

    def prepare(self, x: torch.Tensor) -> bool:
        """Index the ones of x (B, D); False when x is not binary, too dense for gathers to pay, or W was re-laid.

        The flat positions b * D + i of the ones, in increasing order, group them by example b, so the
        bag of example b starts at the number of positions below b * D (a ``searchsorted``); likewise
        the positions i * B + b of the transposed mask group them by pixel i. The indices are built
        with numpy on views of the same memory: its ``x != 0`` and ``flatnonzero`` are faster than
        torch's ``ne`` and ``nonzero`` on one CPU thread (inside the trainer, MNIST at batch 100: 0.48
        ms a step for all of this against 0.83 ms), and they give the same integers in the same order.
        """
        batch, dims = x.shape
        if not self.linear.weight.t().is_contiguous() or x.device.type != "cpu" or x.dtype not in _NUMPY_FLOATS:
            return False
        values = x.detach().numpy()
        ones = values != 0  # (B, D) bool, C-contiguous
        flat = np.flatnonzero(ones)  # b * D + i, increasing
        if len(flat) > MAX_SPARSE_DENSITY * batch * dims:
            return False
        if not (np.take(values, flat) == 1).all():  # not binary: the sums would need weights
            return False
        flat_t = np.flatnonzero(ones.T.copy())  # i * B + b, increasing
        self.offsets = _indices(np.searchsorted(flat, np.arange(0, (batch + 1) * dims, dims)))
        self.cols = _indices(np.remainder(flat, dims, out=flat))  # i of every one, grouped by example b
        self.offsets_t = _indices(np.searchsorted(flat_t, np.arange(0, (dims + 1) * batch, batch)))
        self.rows = _indices(np.remainder(flat_t, batch, out=flat_t))  # b of every one, grouped by pixel i
        return True

    def forward(self, out: torch.Tensor, factor: float) -> torch.Tensor:
        """factor * (x W^T + b) into ``out`` (B, H)."""
        torch.add(_sum_rows(self.linear.weight.t(), self.cols, self.offsets), self.linear.bias, out=out)
        return out.mul_(factor) if factor != 1.0 else out

    def weight_grad(self, delta: torch.Tensor) -> None:
        """``weight.grad`` = d loss / d W = delta^T x (H, D), given delta (B, H): the transpose of a
        fresh contiguous (D, H) sum, so it has the weight's column-major strides."""
        self.linear.weight.grad = _sum_rows(delta, self.rows, self.offsets_t).t()


def _indices(a: np.ndarray) -> torch.Tensor:
    """An int64 tensor sharing the memory of a numpy index array."""
    return torch.from_numpy(a.astype(np.int64, copy=False))


def _sum_rows(table: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Row j: the sum of table[indices[offsets[j]:offsets[j + 1]]] (``embedding_bag`` in "sum" mode).

    Calls the forward-only kernel, which skips the bookkeeping for a backward pass (``torch.nn.functional.embedding_bag``
    under no_grad still does it when the table requires grad)."""
    try:
        return _aten._embedding_bag_forward_only(table, indices, offsets, False, 0, False, None, True, -1)[0]
    except (AttributeError, RuntimeError):  # pragma: no cover - a torch without this private op
        return F.embedding_bag(indices, table.detach(), offsets, mode="sum", include_last_offset=True)


class _Buffers:
    """Activations and gradients of one batch size B with L samples of z."""

    def __init__(self, enc: list[nn.Linear], dec: list[nn.Linear], batch: int, num_samples: int, like):
        def new(*shape):
            return torch.empty(*shape, dtype=like.dtype, device=like.device)

        lb = num_samples * batch
        self.enc_h = [new(batch, m.out_features) for m in enc]  # hidden outputs, then (mu, log_var)
        self.enc_grad = [new(batch, m.out_features) for m in enc]
        self.dec_h = [new(lb, m.out_features) for m in dec]  # hidden outputs, then the logits
        self.dec_grad = [new(lb, m.out_features) for m in dec]  # d loss / d (pre-activations), then / d logits
        self.z_grad = new(lb, dec[0].in_features)
        latent = enc[-1].out_features // 2
        self.std, self.z = new(batch, latent), new(num_samples, batch, latent)
        self.work = new(num_samples, batch, dec[-1].out_features)


class FastElbo:
    """Exact ELBO forward + backward for an MLP Gaussian-encoder VAE (Bernoulli or fixed-sigma Gaussian p(x|z)).

    Args:
        model: a ``VAE`` for which ``fast_path_reason`` is "".
        objective_cfg: ``ObjectiveConfig`` (L = ``num_samples``; beta is passed per call).
    """

    def __init__(self, model: nn.Module, objective_cfg, sparse_input: bool | None = None):
        self.model, self.num_samples = model, objective_cfg.num_samples
        self.enc, self.enc_act = mlp_layers(model.encoder.net)  # type: ignore[misc]  # fast_path_reason checked MLPs
        self.dec, self.dec_act = mlp_layers(model.decoder.net)  # type: ignore[misc]
        if sparse_input is None:  # binary x (the Bernoulli likelihood's support; the trainer checks the data), and
            # gathers pay only beside torch's products: against oneDNN's dense products they measured even
            # (18,356 against 17,988 ex/s, AEVB MNIST model, one thread), so those keep the weight row-major
            sparse_input = type(model.likelihood_module) is BernoulliLikelihood and not gemm.uses_onednn(self.enc[0].weight)
        self.sparse = SparseBinaryInput(self.enc[0]) if sparse_input else None
        self.params = [p for p in model.parameters()]
        self._buffers: dict[tuple[int, int], _Buffers] = {}

    def buffers(self, batch: int, num_samples: int) -> _Buffers:
        key = (batch, num_samples)
        if key not in self._buffers:
            if len(self._buffers) >= 2:  # the full batch and the last partial one
                self._buffers.pop(next(iter(self._buffers)))
            self._buffers[key] = _Buffers(self.enc, self.dec, batch, num_samples, self.params[0])
        return self._buffers[key]

    def _grads(self) -> None:
        for p in self.params:
            if p.grad is None or p.grad.stride() != p.stride():  # fused Adam needs the parameter's layout
                p.grad = torch.empty_like(p)

    @staticmethod
    def _linear_act(m: nn.Linear, h: torch.Tensor, out: torch.Tensor, act) -> torch.Tensor:
        """act(h W^T + b) (no activation for the output layer: act None): a new tensor with the oneDNN
        backend (``gemm``), else written into ``out``."""
        if gemm.uses_onednn(h):
            if act is None or act[3] is not None:
                return gemm.linear(h, m.weight, m.bias, act[3] if act is not None else None)
            return act[0](gemm.linear(h, m.weight, m.bias))  # factor 1: ELU, softplus
        if act is None:
            return torch.addmm(m.bias, h, m.weight.t(), out=out)
        forward, _, factor, _ = act
        return forward(torch.addmm(m.bias, h, m.weight.t(), beta=factor, alpha=factor, out=out))

    @staticmethod
    def _mm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """a @ b: a new tensor with the oneDNN backend, else written into ``out``."""
        return gemm.matmul(a, b) if gemm.uses_onednn(a) else torch.mm(a, b, out=out)

    @torch.no_grad()
    def forward_backward(self, x: torch.Tensor, eps: torch.Tensor, beta: float, scale: float):
        """The bound and its terms for x (B, num_dims) with noise eps (L, B, D), each (B,) in nats.

        Writes d/dtheta of loss = -scale * sum_b bound_b into every parameter's ``.grad``
        (overwriting it). Returns (bound, recon, kl).
        """
        self._grads()
        num_samples, batch = eps.shape[0], x.shape[0]
        buf = self.buffers(batch, num_samples)
        # encoder: h_i = act(h_{i-1} W_i^T + b_i); last layer -> (mu, log_var)
        sparse = self.sparse is not None and self.sparse.prepare(x)
        h, enc_out = x, []
        for i, m in enumerate(self.enc):
            act = self.enc_act[i] if i < len(self.enc_act) else None
            if i == 0 and sparse:
                h = self.sparse.forward(buf.enc_h[0], act[2] if act is not None else 1.0)
                h = act[0](h) if act is not None else h
            else:
                h = self._linear_act(m, h, buf.enc_h[i], act)
            enc_out.append(h)
        latent = h.shape[1] // 2
        mu, log_var = h[:, :latent], h[:, latent:]
        std = torch.mul(log_var, 0.5, out=buf.std).exp_()
        z = torch.addcmul(mu, eps, std, out=buf.z)  # (L, B, D)
        # decoder on the L*B samples: its outputs l (L*B, num_dims), the logits or the Gaussian means
        g, dec_out = z.view(num_samples * batch, latent), []
        for i, m in enumerate(self.dec):
            g = self._linear_act(m, g, buf.dec_h[i], self.dec_act[i] if i < len(self.dec_act) else None)
            dec_out.append(g)
        logits = g.view(num_samples, batch, -1)
        delta = buf.dec_grad[-1].view(num_samples, batch, -1)
        log_p_x_given_z = self._log_likelihood_and_delta(logits, x, buf.work, delta, scale / num_samples)  # (L, B)
        recon = log_p_x_given_z.mean(0)
        var = std.square()
        kl = 0.5 * (mu.square() + var - 1.0 - log_var).sum(-1)
        value = recon - beta * kl
        delta = delta.view(num_samples * batch, -1)
        inputs = [z.view(num_samples * batch, latent), *dec_out[:-1]]
        for i in reversed(range(len(self.dec))):
            m = self.dec[i]
            below = self._mm(delta, m.weight, buf.dec_grad[i - 1] if i > 0 else buf.z_grad)  # first, while the
            m.weight.grad = self._mm(delta.t(), inputs[i], m.weight.grad)  # weight is still in cache from the forward
            torch.sum(delta, 0, out=m.bias.grad)
            if i > 0:
                self.dec_act[i - 1][1](below, inputs[i])
            delta = below
        z_grad = delta.view(num_samples, batch, latent)
        out_grad = buf.enc_grad[-1]
        mu_grad, log_var_grad = out_grad[:, :latent], out_grad[:, latent:]
        torch.sum(z_grad, 0, out=mu_grad).add_(mu, alpha=scale * beta)
        torch.sum(z_grad.mul_(eps), 0, out=log_var_grad).mul_(std).mul_(0.5)
        log_var_grad.add_(var - 1.0, alpha=0.5 * scale * beta)
        delta = out_grad
        inputs = [x, *enc_out[:-1]]
        for i in reversed(range(len(self.enc))):
            m = self.enc[i]
            if i == 0 and sparse:
                self.sparse.weight_grad(delta)
            elif not m.weight.grad.is_contiguous():  # the column-major first layer, x too dense for gathers
                m.weight.grad = self._mm(inputs[i].t(), delta, m.weight.grad.t()).t()
            else:
                m.weight.grad = self._mm(delta.t(), inputs[i], m.weight.grad)
            torch.sum(delta, 0, out=m.bias.grad)
            if i > 0:
                below = self._mm(delta, m.weight, buf.enc_grad[i - 1])
                self.enc_act[i - 1][1](below, inputs[i])
                delta = below
        return value, recon, kl

    def _log_likelihood_and_delta(self, out: torch.Tensor, x: torch.Tensor, work: torch.Tensor, delta: torch.Tensor,
                                  factor: float) -> torch.Tensor:
        """log p(x|z) (L, B) from the decoder outputs ``out`` (L, B, D); ``delta`` <- factor * d(-log p)/d out.

        Bernoulli with logits l: log p = sum_d x_d l_d - softplus(l_d), d(-log p)/dl = sigmoid(l) - x.
        Gaussian, fixed sigma, mean m = l (or sigmoid(l)): log p = -sum_d (x_d - m_d)^2 / (2 sigma^2)
        - D/2 log(2 pi sigma^2), d(-log p)/dm = (m - x) / sigma^2 (times m (1 - m) for the sigmoid mean).
        """
        lik = self.model.likelihood_module
        if type(lik) is BernoulliLikelihood:
            x_dot_l = torch.mul(out, x, out=work).sum(-1)
            log_p = x_dot_l - torch._C._nn.softplus(out, 1.0, 20.0, out=work).sum(-1)
            torch.sigmoid(out, out=delta).sub_(x).mul_(factor)
            return log_p
        sigma = lik.fixed_scale
        if lik.mean_link == "sigmoid":
            loc = torch.sigmoid(out, out=delta)
            diff = torch.sub(loc, x, out=work)
            torch.addcmul(loc, loc, loc, value=-1.0, out=delta).mul_(diff)  # m (1 - m) (m - x)
        else:
            diff = torch.sub(out, x, out=work)
            delta.copy_(diff)
        delta.mul_(factor / sigma ** 2)
        num_dims = out.shape[-1]
        return diff.square_().sum(-1).mul_(-0.5 / sigma ** 2).sub_(0.5 * num_dims * math.log(2 * math.pi * sigma ** 2))

    def optimizer_step(self, model: nn.Module, optimizer, params: list, x: torch.Tensor, eps: torch.Tensor,
                       beta: float, examples: torch.Tensor, global_count: int, world_size: int, train_cfg,
                       num_train: int, any_rank) -> tuple[torch.Tensor | None, str]:
        """``step.optimizer_step`` with the hand-derived gradients (same arguments, same result)."""
        value, recon, kl = self.forward_backward(x, eps, beta, world_size / global_count)
        if any_rank(not bool(torch.isfinite(value).all())):
            return None, describe_nonfinite(value, recon, kl, examples)
        add_prior_gradient(params, train_cfg.weight_decay, num_train)
        check = clip_or_check_gradients(params, train_cfg.grad_clip)
        if not bool(torch.isfinite(check)):
            return None, f"the bound is finite but the gradient of {first_bad_gradient(model)} is not"
        step_optimizer(optimizer)
        sums = torch.stack([value.sum(), recon.sum(), kl.sum(), value.new_tensor(float(len(value)))])
        return sums.double(), ""
