"""The hand-derived forward and backward pass (no autograd) for VAEs with L >= 2 stochastic layers.

The model (``models/vae.py``, the IWAE paper's L-layer model): q(z_1|x) = N(mu_1, diag exp(lv_1)) from
the encoder MLP, q(z_{l+1}|z_l) = N(mu_{l+1}, diag exp(lv_{l+1})) from ``posterior_layers[l]``,
p(z_l|z_{l+1}) = N(m_l, diag exp(plv_l)) from ``prior_layers[l]`` (each a ``GaussianEncoder`` over an
MLP, its output the halves (mean, log-variance)), p(z_L) = N(0, I) and p(x|z_1) from the decoder as
in ``fastpath.FastElbo``. One draw takes eps (K, B, sum_l D_l) split by ``latent_dims`` (as
``models.base._draw``): z_l = mu_l + exp(lv_l / 2) * eps_l, layer by layer, bottom-up.

Per draw k, in nats (the log(2 pi) constants cancel between p and q: every layer has one in each),
    log q(z_l|parent)  = -sum_j (eps_lj^2 + lv_lj) / 2                         ((z_l - mu_l) / std_l = eps_l)
    log p(z_l|z_{l+1}) = -sum_j ((z_lj - m_lj)^2 exp(-plv_lj) + plv_lj) / 2,   log p(z_L) = -sum_j z_Lj^2 / 2
    r_k = log p(z) - log q(z|x) = sum_l [log p(z_l|.) - log q(z_l|.)]
and the bounds are those of ``FastElbo`` with this r_k (iwae: log w_k = log p(x|z_1k) + r_k; elbo,
kl="mc": (1/K) sum_k log p(x|z_1k) + beta r_k). With kl="analytic" the top layer's pair is replaced
by its closed form given the drawn z_{L-1}, as in ``LatentVariableModel.trace``:
log p(z_L) - log q(z_L|z_{L-1}) -> -KL_L = -sum_j (mu_Lj^2 + exp(lv_Lj) - 1 - lv_Lj) / 2.

Backward of loss = -scale * sum_b bound_b, with the per-draw weights of ``FastElbo`` (a_k on log p(x|z_1),
c_k on r_k; for IWAE both scale * w~_k, the normalised importance weights), all with eps fixed:
    d loss / d z_1            <- decoder backward of scale * a_k (d(-log p(x|z_1)) / d l), as in FastElbo
    -c log p(z_l|z_{l+1}):      d / d z_l = c (z_l - m_l) / v_l,  d / d m_l = -c (z_l - m_l) / v_l,
                                d / d plv_l = c (1 - (z_l - m_l)^2 / v_l) / 2   (v_l = exp(plv_l)),
                                then back through ``prior_layers[l]`` into z_{l+1}
    -c log p(z_L):              d / d z_L = c z_L
    +c log q(z_l|parent):       d / d lv_l = -c / 2 (the total derivative along z_l = mu_l + std_l eps_l:
                                the path and score terms cancel; 0 for mu_l)
    +c KL_L (analytic):         d / d mu_L = c mu_L,  d / d lv_L = c (exp(lv_L) - 1) / 2
    reparameterisation:         d / d mu_l += d loss / d z_l,  d / d lv_l += d loss / d z_l * eps_l std_l / 2,
                                then back through the posterior MLP of layer l into its parent z_{l-1}
                                (the encoder for l = 1, where mu_1, lv_1 are per example: summed over k).
The decoder and the prior layers only need the draws, so they go first; then the posterior layers go
top-down, so that each d loss / d z_l is complete (decoder or prior terms, p(z_{l-1}|z_l)'s MLP and
q(z_{l+1}|z_l)'s MLP) before it is used. Every MLP appears once, so its gradients are written, not added.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from aevb.speed import gemm
from aevb.speed.fastpath import FastElbo, batch_cache, mlp_layers


class _LayerBuffers:
    """The upper layers' activations and gradients for batch B and K draws (K * B rows)."""

    def __init__(self, dims: list[int], up: list, down: list, batch: int, num_samples: int, like: torch.Tensor):
        def new(*shape):
            return torch.empty(*shape, dtype=like.dtype, device=like.device)

        kb = num_samples * batch
        self.up_h = [[new(kb, m.out_features) for m in lin] for lin, _ in up]  # q(z_{l+1}|z_l)'s MLP
        self.up_grad = [[new(kb, m.out_features) for m in lin] for lin, _ in up]
        self.down_h = [[new(kb, m.out_features) for m in lin] for lin, _ in down]  # p(z_l|z_{l+1})'s MLP
        self.down_grad = [[new(kb, m.out_features) for m in lin] for lin, _ in down]
        self.z = [new(num_samples, batch, d) for d in dims[1:]]  # z_2 .. z_L
        self.std = [new(num_samples, batch, d) for d in dims[1:]]
        self.z_grad = [new(kb, d) for d in dims[1:]]  # d loss / d z_2 .. z_L
        self.below = [new(kb, d) for d in dims[:-1]]  # d loss / d z_l through q(z_{l+1}|z_l)'s MLP
        self.diff = [new(num_samples, batch, d) for d in dims[:-1]]  # z_l - m_l, l < L
        self.scaled = [new(num_samples, batch, d) for d in dims[:-1]]  # (z_l - m_l) / v_l


class FastHierarchicalElbo(FastElbo):
    """``FastElbo`` for L >= 2 stochastic layers: the IWAE bound, or the ELBO (Monte Carlo or, for the top
    layer, closed-form KL), its terms and every parameter's gradient without autograd.

    Args:
        model: a ``VAE`` with L >= 2 layers for which ``fast_path_reason`` is "".
        objective_cfg: ``ObjectiveConfig`` (as for ``FastElbo``).
    """

    def __init__(self, model: nn.Module, objective_cfg):
        super().__init__(model, objective_cfg)
        self.dims = list(model.latent_dims)
        self.up: list = [mlp_layers(layer.net) for layer in model.posterior_layers]  # l-th: z_l -> q(z_{l+1}|z_l)
        self.down: list = [mlp_layers(layer.net) for layer in model.prior_layers]  # l-th: z_{l+1} -> p(z_l|z_{l+1})
        self._layer_buffers: dict[tuple[int, int], _LayerBuffers] = {}

    def layer_buffers(self, batch: int, num_samples: int) -> _LayerBuffers:
        return batch_cache(self._layer_buffers, (batch, num_samples),
                           lambda: _LayerBuffers(self.dims, self.up, self.down, batch, num_samples, self.params[0]))

    @torch.no_grad()
    def forward_backward(self, x: torch.Tensor, eps: torch.Tensor, beta: float, scale: float):
        """The bound and its terms for x (B, num_dims) with noise eps (K, B, sum_l D_l), each (B,) in nats.

        Writes d/dtheta of loss = -scale * sum_b bound_b into every parameter's ``.grad``. Returns
        (bound, recon, kl) as ``objectives.elbo`` / ``objectives.iwae`` do: kl the mean over the K draws
        of log q(z|x) - log p(z) (its top layer in closed form with kl="analytic")."""
        self._grads()
        num_samples, batch = eps.shape[0], x.shape[0]
        kb, dims, top = num_samples * batch, self.dims, len(self.dims) - 1
        buf, lay = self.buffers(batch, num_samples), self.layer_buffers(batch, num_samples)
        onednn = gemm.uses_onednn(x)
        eps_l = eps.split(dims, dim=-1)
        # bottom-up draws: z_1 ~ q(z_1|x) (mu_1, lv_1 per example), z_{l+1} ~ q(z_{l+1}|z_l) (per draw)
        enc_out = self._mlp_forward(self.enc, self.enc_act, x, buf.enc_h, onednn)
        mu, log_var = enc_out[-1][:, :dims[0]], enc_out[-1][:, dims[0]:]
        std = torch.mul(log_var, 0.5, out=buf.std).exp_()
        zs, mus, log_vars, stds = [torch.addcmul(mu, eps_l[0], std, out=buf.z)], [mu], [log_var], [std]
        log_q = log_var.sum(-1).add(eps_l[0].square().sum(-1))  # -2 log q(z_1|x) (K, B), less log(2 pi) terms (they cancel with p's)
        up_out = []
        for i, (lin, act) in enumerate(self.up):
            up_out.append(self._mlp_forward(lin, act, zs[i].view(kb, -1), lay.up_h[i], onednn))
            out = up_out[i][-1].view(num_samples, batch, -1)
            d = dims[i + 1]
            mu, log_var = out[..., :d], out[..., d:]
            std = torch.mul(log_var, 0.5, out=lay.std[i]).exp_()
            zs.append(torch.addcmul(mu, eps_l[i + 1], std, out=lay.z[i]))
            mus.append(mu)
            log_vars.append(log_var)
            stds.append(std)
            if i + 1 < top or not self.analytic_kl:
                log_q.add_(log_var.sum(-1)).add_(eps_l[i + 1].square().sum(-1))
        # the prior's conditionals: p(z_l|z_{l+1}) from the l-th prior MLP; -2 log p(z) (K, B), less log(2 pi) terms
        down_out, log_p = [], torch.zeros_like(log_q)
        for i, (lin, act) in enumerate(self.down):
            down_out.append(self._mlp_forward(lin, act, zs[i + 1].view(kb, -1), lay.down_h[i], onednn))
            out = down_out[i][-1].view(num_samples, batch, -1)
            m, p_log_var = out[..., :dims[i]], out[..., dims[i]:]
            diff = torch.sub(zs[i], m, out=lay.diff[i])
            scaled = torch.mul(diff, torch.exp(p_log_var.neg()), out=lay.scaled[i])  # (z_l - m_l) / v_l
            log_p.add_((diff * scaled).sum(-1)).add_(p_log_var.sum(-1))
        if self.analytic_kl:  # KL(q(z_L|z_{L-1}) || N(0, I)) in closed form
            kl_top = (mus[top].square() + stds[top].square() - 1.0 - log_vars[top]).sum(-1).mul_(0.5)
        else:
            log_p.add_(zs[top].square().sum(-1))
        log_ratio = log_q.sub_(log_p).mul_(0.5)  # log p(z) - log q(z|x) (K, B); analytic KL: its top pair is -KL_L
        if self.analytic_kl:
            log_ratio.sub_(kl_top)
        # decoder on z_1, as in FastElbo
        dec_out = self._mlp_forward(self.dec, self.dec_act, zs[0].view(kb, -1), buf.dec_h, onednn)
        delta = buf.dec_grad[-1].view(num_samples, batch, -1)
        a = 1.0 if self.iwae else scale / num_samples
        log_p_x_given_z = self._log_likelihood_and_delta(dec_out[-1].view(num_samples, batch, -1), x, buf.work,
                                                         delta, a)
        recon = log_p_x_given_z.mean(0)
        kl = log_ratio.mean(0).neg_()
        c: float | torch.Tensor  # scale * c_k: a float, or (K, B, 1) for IWAE
        if self.iwae:
            log_w = log_p_x_given_z + log_ratio
            lse = torch.logsumexp(log_w, 0)
            value = lse - math.log(num_samples)
            c = torch.sub(log_w, lse).exp_().mul_(scale).unsqueeze(-1)
            delta.mul_(c)
        else:
            value = recon - beta * kl
            c = scale * beta / num_samples
        # backward: the decoder into z_1, each prior MLP into its parent z_{l+1}
        z_grads = [self._mlp_backward(self.dec, self.dec_act, [zs[0].view(kb, -1), *dec_out[:-1]],
                                      delta.view(kb, -1), buf.dec_grad, buf.z_grad, onednn)]
        for i, (lin, act) in enumerate(self.down):
            out_grad = lay.down_grad[i][-1].view(num_samples, batch, -1)
            m_grad, p_log_var_grad = out_grad[..., :dims[i]], out_grad[..., dims[i]:]
            torch.mul(lay.scaled[i], c, out=m_grad)  # c (z_l - m_l) / v_l = d(-c log p)/dz_l
            z_grads[i].view(num_samples, batch, -1).add_(m_grad)
            m_grad.neg_()
            torch.mul(lay.diff[i], lay.scaled[i], out=p_log_var_grad).sub_(1.0).mul_(c).mul_(-0.5)
            z_grads.append(self._mlp_backward(lin, act, [zs[i + 1].view(kb, -1), *down_out[i][:-1]],
                                              out_grad.view(kb, -1), lay.down_grad[i], lay.z_grad[i], onednn))
        if not self.analytic_kl:  # d(-c log p(z_L))/dz_L = c z_L
            z_grad = z_grads[top].view(num_samples, batch, -1)
            if self.iwae:
                z_grad.addcmul_(c, zs[top])
            else:
                z_grad.add_(zs[top], alpha=c)  # type: ignore[arg-type]  # a float without IWAE
        # top-down through the posterior layers: q(z_{l+1}|z_l)'s MLP into z_l once d loss / d z_{l+1} is complete
        for i in reversed(range(len(self.up))):
            lin, act = self.up[i]
            d = dims[i + 1]
            z_grad = z_grads[i + 1].view(num_samples, batch, -1)
            out_grad = lay.up_grad[i][-1].view(num_samples, batch, -1)
            mu_grad, log_var_grad = out_grad[..., :d], out_grad[..., d:]
            mu_grad.copy_(z_grad)
            torch.mul(z_grad, eps_l[i + 1], out=log_var_grad).mul_(stds[i + 1]).mul_(0.5)
            if i + 1 == top and self.analytic_kl:
                mu_grad.add_(mus[top], alpha=c)  # type: ignore[arg-type]  # a float without IWAE
                log_var_grad.add_(stds[top].square().sub_(1.0), alpha=0.5 * c)  # type: ignore[operator]
            elif self.iwae:
                log_var_grad.sub_(c, alpha=0.5)  # type: ignore[arg-type]
            else:
                log_var_grad.sub_(0.5 * c)  # type: ignore[operator]
            below = self._mlp_backward(lin, act, [zs[i].view(kb, -1), *up_out[i][:-1]], out_grad.view(kb, -1),
                                       lay.up_grad[i], lay.below[i], onednn)
            z_grads[i].add_(below)  # type: ignore[union-attr]
        # the encoder: mu_1, lv_1 are per example, so the K draws' gradients are summed
        z_grad = z_grads[0].view(num_samples, batch, -1)
        out_grad = buf.enc_grad[-1]
        mu_grad, log_var_grad = out_grad[:, :dims[0]], out_grad[:, dims[0]:]
        torch.sum(z_grad, 0, out=mu_grad)
        torch.sum(z_grad.mul_(eps_l[0]), 0, out=log_var_grad).mul_(stds[0]).mul_(0.5)
        if self.iwae:
            log_var_grad.sub_(c.sum(0), alpha=0.5)  # type: ignore[union-attr]
        else:
            log_var_grad.sub_(0.5 * c * num_samples)  # type: ignore[operator]
        self._mlp_backward(self.enc, self.enc_act, [x, *enc_out[:-1]], out_grad, buf.enc_grad, None, onednn)
        return value, recon, kl
