"""A hand-derived forward and backward pass of the ELBO and IWAE bounds for MLP VAEs (no autograd).

The trainer uses it automatically when it applies (``fast_path_reason`` returns "") and
``train.fast_path`` is on; otherwise the autograd path of ``step.py`` runs. Both compute the same
numbers to float rounding (tests/test_fastpath.py checks the bound, its terms and every gradient
against autograd through ``objectives.elbo`` and ``objectives.iwae``), and both consume the same
noise: the binarization uniforms and eps ~ N(0, I) drawn by ``step.draw_batch`` from the trainer's
generator.

The model it covers: q(z|x) = N(mu(x), diag(exp(log_var(x)))) from an MLP encoder (any depth),
p(z) = N(0, I), p(x|z) = prod_d Bernoulli(x_d; sigmoid(l_d(z))) from an MLP decoder (or a Gaussian
with a fixed sigma and mean l_d or sigmoid(l_d), see ``_log_likelihood_and_delta``). With K draws
z_k = mu + exp(log_var / 2) * eps_k and, per draw, the log densities in nats
    log p(x|z_k),    r_k = log p(z_k) - log q(z_k|x) = sum_j (eps_kj^2 - z_kj^2 + log_var_j) / 2,
the bounds per example are
    elbo, kl="analytic":  (1/K) sum_k log p(x|z_k) - beta * KL,  KL = 1/2 sum_j (mu_j^2 + exp(log_var_j) - 1 - log_var_j)
    elbo, kl="mc":        (1/K) sum_k (log p(x|z_k) + beta * r_k)
    iwae:                 log (1/K) sum_k exp(log w_k),  log w_k = log p(x|z_k) + r_k   (Burda et al. 2016, eq. 8)
Each is a weighted sum of the draws' terms to first order: with a_k = d bound / d log p(x|z_k) and
c_k = d bound / d r_k (1/K and 0; 1/K and beta/K; and for IWAE the normalised weights
w~_k = exp(log w_k - logsumexp_k log w_k) for both), the gradients of loss = -scale * sum_b bound(x_b)
(scale = 1 / batch size) are, by the chain rule,
    d loss / d l_k        = scale * a_k * (sigmoid(l_k) - x)                (Bernoulli with logits l)
    d loss / d z_k        = (d loss / d l_k back through the decoder) + scale * c_k * z_k
    d loss / d mu         = sum_k d loss / d z_k                              (+ scale * beta * mu, analytic KL)
    d loss / d log_var    = sum_k d loss / d z_k * eps_k * exp(log_var / 2) / 2
                            - scale / 2 * sum_k c_k                           (Monte Carlo r_k: the total
                                                                               derivative of log q along z_k)
                            + scale * beta * (exp(log_var) - 1) / 2            (analytic KL)
    d loss / d a          = d loss / d h * act'(a), act' from the output h (tanh: 1 - h^2)
    d loss / d W = delta^T h_in,  d loss / d b = sum_b delta,  d loss / d h_in = delta W  (Linear: y = h_in W^T + b)
The total derivative of log q(z_k|x) along z_k = mu + std * eps_k is 0 for mu and -1/2 for log_var
(the path and score terms cancel), which is why r_k's gradient has the simple form above.

L >= 2 stochastic layers (the IWAE paper's two-layer model: q(z_1|x) from the encoder, q(z_{l+1}|z_l) and
p(z_l|z_{l+1}) diagonal Gaussians from MLPs, p(z_L) = N(0, I)) go through ``hierarchical.FastHierarchicalElbo``,
a subclass using the same MLP passes (``_mlp_forward``, ``_mlp_backward``), buffers and likelihood
(``build_fast_bound`` picks the class). There, per draw, with eps split by layer and z_l = mu_l + std_l * eps_l,
    r_k = log p(z_L) + sum_{l<L} log p(z_l|z_{l+1}) - sum_l log q(z_l|parent_l)
        = sum_l [ -z_L^2 / 2 (top) or -((z_l - m_l)^2 / v_l + plv_l) / 2 ] + sum_l (eps_l^2 + lv_l) / 2  (summed over j)
enters the bounds exactly as above (with kl="analytic" only the top pair is replaced by its closed-form KL,
as in ``LatentVariableModel.trace``); each log p(z_l|z_{l+1}) adds c (z_l - m_l) / v_l to d loss / d z_l and
sends -c (z_l - m_l) / v_l, c (1 - (z_l - m_l)^2 / v_l) / 2 back through its prior MLP into z_{l+1}; each
log q(z_l|.) adds -c / 2 to d loss / d lv_l; and the posterior MLPs are walked top-down, so that
d loss / d z_l is complete before mu_l, lv_l and z_{l-1} receive it (hierarchical.py writes it all out).

Products: the large ones (``ONEDNN_MIN_MACS``) on oneDNN (``gemm``, float32 on x86 CPUs; they return
new tensors and apply tanh or ReLU inside the product), the others with torch's ``addmm``/``mm``
writing into buffers allocated once per batch shape (oneDNN's per-call cost loses on small products).
An earlier version summed gathered weight rows for the binary first layer (``embedding_bag``);
beside oneDNN's dense products it lost (0.91x in an in-process A/B, 2026-12-06) and was removed.
"""

from __future__ import annotations

import math

import torch
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


def _gaussian_mlp(layer: nn.Module) -> bool:
    return type(layer) is GaussianEncoder and mlp_layers(layer.net) is not None


def fast_path_reason(model: nn.Module, cfg, world_size: int = 1) -> str:
    """Why the fast path does not apply to this model and config ("" when it does)."""
    t, o = cfg.train, cfg.objective
    upper = [*getattr(model, "posterior_layers", ()), *getattr(model, "prior_layers", ())]
    checks = [
        (not getattr(t, "fast_path", True), "train.fast_path is off"),
        (t.compile, "train.compile is on"),
        (o.name not in ("elbo", "iwae"), f"objective {o.name} (needs elbo or iwae)"),
        (o.name == "iwae" and o.beta != 1.0, "the iwae bound with beta != 1"),
        (not getattr(model, "latent_dims", ()), "the model has no latent_dims (not a models.base latent-variable model)"),
        (not all(_gaussian_mlp(m) for m in upper),
         "a stochastic layer above z_1 is not a diagonal Gaussian (GaussianEncoder) over an MLP"),
        (type(getattr(model, "encoder", None)) is not GaussianEncoder
         or mlp_layers(model.encoder.net) is None, "the encoder is not a GaussianEncoder over an MLP"),
        (type(getattr(model, "decoder", None)) is not Decoder
         or mlp_layers(model.decoder.net) is None, "the decoder is not an MLP"),
        (type(getattr(model, "prior_module", None)) is not StandardNormalPrior, "the prior is not standard_normal"),
        (getattr(model, "conditional", False), "the model is conditional (labels join the encoder and decoder inputs)"),
        (not supported_likelihood(getattr(model, "likelihood_module", None)),
         "the likelihood is not bernoulli or gaussian with a fixed sigma"),
        (not all(p.requires_grad for p in model.parameters()), "some parameters are frozen"),
        (next(model.parameters()).device.type != "cpu", "the fast path is CPU-only (untested on other devices)"),
    ]
    return next((why for bad, why in checks if bad), "")


# oneDNN's products beat torch's (MKL's) only when large: each call costs about 20-40 us more (measured
# 2026-12-06, one thread, busy machine: 100x500 @ 500x20 took 72 us against 42 us; 100x784 @ 784x500 980 us
# against 1,230 us). The IWAE model's largest products (100x200x784, 15.7M multiply-adds) trained faster
# on torch's: 4,260 against 3,689 ex/s (in-process A/B, medians of 4), so the line is drawn above them.
ONEDNN_MIN_MACS = 20_000_000


def build_fast_bound(model: nn.Module, objective_cfg) -> FastElbo:
    """The fast path for a model with ``fast_path_reason`` "": ``FastElbo`` for one stochastic layer,
    ``hierarchical.FastHierarchicalElbo`` for L >= 2."""
    if len(model.latent_dims) == 1:
        return FastElbo(model, objective_cfg)
    from aevb.speed.hierarchical import FastHierarchicalElbo  # it builds on FastElbo

    return FastHierarchicalElbo(model, objective_cfg)


class _Buffers:
    """Activations and gradients of one batch size B with K samples of z (torch's products write into them)."""

    def __init__(self, enc: list[nn.Linear], dec: list[nn.Linear], batch: int, num_samples: int, like):
        def new(*shape):
            return torch.empty(*shape, dtype=like.dtype, device=like.device)

        kb = num_samples * batch
        self.enc_h = [new(batch, m.out_features) for m in enc]  # hidden outputs, then (mu, log_var)
        self.enc_grad = [new(batch, m.out_features) for m in enc]
        self.dec_h = [new(kb, m.out_features) for m in dec]  # hidden outputs, then the decoder's outputs l
        self.dec_grad = [new(kb, m.out_features) for m in dec]  # d loss / d (pre-activations), then / d l
        self.z_grad = new(kb, dec[0].in_features)
        latent = enc[-1].out_features // 2
        self.std, self.z = new(batch, latent), new(num_samples, batch, latent)
        self.work = new(num_samples, batch, dec[-1].out_features)


def batch_cache(cache: dict, key: tuple, make):
    """``cache[key]``, built by ``make()`` when missing; the cache keeps two batch shapes (the full batch and
    the last partial one), dropping the oldest."""
    if key not in cache:
        if len(cache) >= 2:
            cache.pop(next(iter(cache)))
        cache[key] = make()
    return cache[key]


class FastElbo:
    """Exact forward + backward of the ELBO (analytic or Monte Carlo KL) or the IWAE bound for an MLP VAE.

    Args:
        model: a ``VAE`` for which ``fast_path_reason`` is "".
        objective_cfg: ``ObjectiveConfig``: ``name`` ("elbo" or "iwae"), ``kl`` and K = ``num_samples``
            (beta is passed per call).
    """

    def __init__(self, model: nn.Module, objective_cfg):
        self.model, self.num_samples = model, objective_cfg.num_samples
        self.iwae = objective_cfg.name == "iwae"
        self.analytic_kl = not self.iwae and objective_cfg.kl == "analytic"
        self.enc, self.enc_act = mlp_layers(model.encoder.net)  # type: ignore[misc]  # fast_path_reason checked MLPs
        self.dec, self.dec_act = mlp_layers(model.decoder.net)  # type: ignore[misc]
        self.params = [p for p in model.parameters()]
        self._buffers: dict[tuple[int, int], _Buffers] = {}

    def buffers(self, batch: int, num_samples: int) -> _Buffers:
        return batch_cache(self._buffers, (batch, num_samples),
                           lambda: _Buffers(self.enc, self.dec, batch, num_samples, self.params[0]))

    def _grads(self) -> None:
        for p in self.params:
            if p.grad is None or p.grad.stride() != p.stride():  # fused Adam needs the parameter's layout
                p.grad = torch.empty_like(p)

    @staticmethod
    def _linear_act(m: nn.Linear, h: torch.Tensor, out: torch.Tensor, act, onednn: bool) -> torch.Tensor:
        """act(h W^T + b) (no activation for the output layer: act None): a new tensor on oneDNN
        (``gemm``) for a large product, else written into ``out`` by torch's ``addmm``."""
        if onednn and h.shape[0] * m.in_features * m.out_features >= ONEDNN_MIN_MACS:
            if act is None or act[3] is not None:
                return gemm.onednn_linear(h, m.weight, m.bias, act[3] if act is not None else None)
            return act[0](gemm.onednn_linear(h, m.weight, m.bias, None))  # factor 1: ELU, softplus
        if act is None:
            return torch.addmm(m.bias, h, m.weight.t(), out=out)
        forward, _, factor, _ = act
        return forward(torch.addmm(m.bias, h, m.weight.t(), beta=factor, alpha=factor, out=out))

    @staticmethod
    def _mm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, onednn: bool) -> torch.Tensor:
        """a @ b: a new tensor on oneDNN for a large product, else written into ``out``."""
        if onednn and a.shape[0] * a.shape[1] * b.shape[1] >= ONEDNN_MIN_MACS:
            return gemm.onednn_linear(a, b.t(), None, None)
        return torch.mm(a, b, out=out)

    @classmethod
    def _mlp_forward(cls, linears: list[nn.Linear], acts: list, h: torch.Tensor, outs: list[torch.Tensor],
                     onednn: bool) -> list[torch.Tensor]:
        """Every layer's output of an MLP for the input h (rows, in): h_i = act(h_{i-1} W_i^T + b_i), the last
        layer without an activation; each written into ``outs[i]`` (or new, see ``_linear_act``)."""
        out = []
        for i, m in enumerate(linears):
            h = cls._linear_act(m, h, outs[i], acts[i] if i < len(acts) else None, onednn)
            out.append(h)
        return out

    @classmethod
    def _mlp_backward(cls, linears: list[nn.Linear], acts: list, inputs: list[torch.Tensor], delta: torch.Tensor,
                      grads: list[torch.Tensor], input_grad: torch.Tensor | None, onednn: bool) -> torch.Tensor | None:
        """Backward through an MLP used once: ``delta`` = d loss / d (its output) (rows, out); ``inputs[i]`` the
        input of layer i (the MLP's input, then the hidden outputs). Writes each Linear's ``.grad`` (overwriting
        it; ``grads[i]`` receive d loss / d pre-activation i) and returns d loss / d inputs[0], written into
        ``input_grad`` (None: not computed)."""
        for i in reversed(range(len(linears))):
            m = linears[i]
            below = None
            if i > 0 or input_grad is not None:  # first, while the weight is still in cache
                below = cls._mm(delta, m.weight, grads[i - 1] if i > 0 else input_grad, onednn)
            m.weight.grad = cls._mm(delta.t(), inputs[i], m.weight.grad, onednn)
            torch.sum(delta, 0, out=m.bias.grad)
            if i > 0:
                acts[i - 1][1](below, inputs[i])
            delta = below  # type: ignore[assignment]  # None only after the first layer
        return delta if input_grad is not None else None

    @torch.no_grad()
    def forward_backward(self, x: torch.Tensor, eps: torch.Tensor, beta: float, scale: float):
        """The bound and its terms for x (B, num_dims) with noise eps (K, B, D), each (B,) in nats.

        Writes d/dtheta of loss = -scale * sum_b bound_b into every parameter's ``.grad``
        (overwriting it). Returns (bound, recon, kl): recon = (1/K) sum_k log p(x|z_k); kl the
        closed form, or (1/K) sum_k (log q(z_k|x) - log p(z_k)) with a Monte Carlo KL and for IWAE
        (there, as in ``objectives.iwae``, for monitoring only).
        """
        self._grads()
        num_samples, batch = eps.shape[0], x.shape[0]
        kb = num_samples * batch
        buf = self.buffers(batch, num_samples)
        onednn = gemm.uses_onednn(x)
        # encoder: h_i = act(h_{i-1} W_i^T + b_i); last layer -> (mu, log_var)
        enc_out = self._mlp_forward(self.enc, self.enc_act, x, buf.enc_h, onednn)
        h = enc_out[-1]
        latent = h.shape[1] // 2
        mu, log_var = h[:, :latent], h[:, latent:]
        std = torch.mul(log_var, 0.5, out=buf.std).exp_()
        z = torch.addcmul(mu, eps, std, out=buf.z)  # (K, B, D)
        # decoder on the K*B samples: its outputs l (K*B, num_dims), the logits or the Gaussian means
        dec_out = self._mlp_forward(self.dec, self.dec_act, z.view(kb, latent), buf.dec_h, onednn)
        g = dec_out[-1]
        delta = buf.dec_grad[-1].view(num_samples, batch, -1)
        a = 1.0 if self.iwae else scale / num_samples  # scale * a_k, for IWAE applied below with the weights
        log_p_x_given_z = self._log_likelihood_and_delta(g.view(num_samples, batch, -1), x, buf.work, delta, a)
        recon = log_p_x_given_z.mean(0)  # (B,)
        c: float | torch.Tensor = 0.0  # scale * c_k: a float, or (K, B, 1) for IWAE
        if self.analytic_kl:
            var = std.square()
            kl = 0.5 * (mu.square() + var - 1.0 - log_var).sum(-1)
            value = recon - beta * kl
        else:
            log_ratio = (eps.square() - z.square()).sum(-1).add_(log_var.sum(-1)).mul_(0.5)  # log p(z) - log q(z|x) (K, B)
            kl = log_ratio.mean(0).neg_()
            if self.iwae:
                log_w = log_p_x_given_z + log_ratio
                lse = torch.logsumexp(log_w, 0)
                value = lse - math.log(num_samples)
                c = torch.sub(log_w, lse).exp_().mul_(scale).unsqueeze(-1)  # scale * normalised weights
                delta.mul_(c)
            else:
                value = recon - beta * kl
                c = scale * beta / num_samples
        z_grad = self._mlp_backward(self.dec, self.dec_act, [z.view(kb, latent), *dec_out[:-1]], delta.view(kb, -1),
                                    buf.dec_grad, buf.z_grad, onednn).view(num_samples, batch, latent)
        if self.iwae:
            z_grad.addcmul_(c, z)  # d(-log p(z))/dz = z
        elif c:
            z_grad.add_(z, alpha=c)
        out_grad = buf.enc_grad[-1]
        mu_grad, log_var_grad = out_grad[:, :latent], out_grad[:, latent:]
        torch.sum(z_grad, 0, out=mu_grad)
        torch.sum(z_grad.mul_(eps), 0, out=log_var_grad).mul_(std).mul_(0.5)
        if self.analytic_kl:
            mu_grad.add_(mu, alpha=scale * beta)
            log_var_grad.add_(var - 1.0, alpha=0.5 * scale * beta)
        elif self.iwae:
            log_var_grad.sub_(c.sum(0), alpha=0.5)  # type: ignore[union-attr]  # sum_k c_k = scale (to rounding)
        else:
            log_var_grad.sub_(0.5 * c * num_samples)
        self._mlp_backward(self.enc, self.enc_act, [x, *enc_out[:-1]], out_grad, buf.enc_grad, None, onednn)
        return value, recon, kl

    def _log_likelihood_and_delta(self, out: torch.Tensor, x: torch.Tensor, work: torch.Tensor, delta: torch.Tensor,
                                  factor: float) -> torch.Tensor:
        """log p(x|z) (K, B) from the decoder outputs ``out`` (K, B, D); ``delta`` <- factor * d(-log p)/d out.

        Bernoulli with logits l: log p = sum_d x_d l_d - softplus(l_d), d(-log p)/dl = sigmoid(l) - x.
        Gaussian, fixed sigma, mean m = l (or sigmoid(l)): log p = -sum_d (x_d - m_d)^2 / (2 sigma^2)
        - D/2 log(2 pi sigma^2), d(-log p)/dm = (m - x) / sigma^2 (times m (1 - m) for the sigmoid mean).
        """
        lik = self.model.likelihood_module
        if type(lik) is BernoulliLikelihood:
            x_dot_l = torch.mul(out, x, out=work).sum(-1)
            log_p = x_dot_l - torch._C._nn.softplus(out, 1.0, 20.0, out=work).sum(-1)
            torch.sigmoid(out, out=delta).sub_(x)
            if factor != 1.0:
                delta.mul_(factor)
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
        """``step.optimizer_step`` with the hand-derived gradients (same arguments, same result).

        The bound is checked through its float64 sum (non-finite exactly when some bound is; no
        float32 sum of per-example bounds overflows float64)."""
        value, recon, kl = self.forward_backward(x, eps, beta, world_size / global_count)
        sums = torch.empty(4, dtype=torch.float64)
        torch.sum(torch.stack([value, recon, kl]), 1, dtype=torch.float64, out=sums[:3])
        sums[3] = len(value)
        if any_rank(not math.isfinite(sums[0])):
            return None, describe_nonfinite(value, recon, kl, examples)
        if world_size > 1:
            average_gradients(self.params, world_size)
        add_prior_gradient(params, train_cfg.weight_decay, num_train)
        check = clip_or_check_gradients(params, train_cfg.grad_clip)
        if not bool(torch.isfinite(check)):
            return None, f"the bound is finite but the gradient of {first_bad_gradient(model)} is not"
        step_optimizer(optimizer)
        return sums, ""


def average_gradients(params: list, world_size: int) -> None:
    """Each ``.grad`` <- the mean of that gradient over the ``world_size`` ranks (what DistributedDataParallel
    does in its backward pass): one all-reduce of all gradients laid end to end, then divided by the world size.

    With the local loss -sum(bound) * W / B_global on every rank (``step.optimizer_step``) the mean is the
    gradient of -mean(bound) over the global batch, as under DDP (same numbers to float rounding: DDP divides
    before summing)."""
    import torch.distributed as dist

    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(world_size)
    torch._foreach_copy_(grads, [v.view_as(g) for v, g in zip(flat.split([g.numel() for g in grads]), grads)])
