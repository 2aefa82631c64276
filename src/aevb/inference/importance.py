"""Importance sampling for evaluation: per-example L_K, ELBO terms and posterior means, chunked and streamed.

log p(x) is estimated by the IWAE bound (Burda, Grosse & Salakhutdinov 2016, eq. 8)

    L_K(x) = log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x),   z_k ~ q(z|x),

which is a lower bound that rises to log p(x) as K grows (K = 5000 is the literature's protocol).
The ELBO is reported with its analytic KL: ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)), where
E_q is the mean of log p(x|z_k) over the same K draws.

Fast and bounded: each example is encoded once; its K samples are decoded in blocks whose size
comes from ``memory_mb``; the log-sum-exp is accumulated over blocks (streaming, with a running
max); log q(z|x) is computed from the standard-normal noise (z = mu + sigma * eps gives
log q = -sum(eps^2)/2 - sum(log sigma) - D/2 log 2 pi); the Bernoulli log-likelihood is
x . l - sum softplus(l), with x . l a matrix-vector product, never x copied K times; a tanh MLP
decoder runs as the equivalent sigmoid MLP (``SigmoidMLP``), which is faster on CPUs; on the CPU,
whole chunks run in parallel threads with one torch thread each (``run_jobs``).

Randomness (documented so that it can be reproduced independently; tests do):
  1. dynamic binarization: ``torch.bernoulli(x, generator=Generator().manual_seed(seed))`` once
     over the whole input, on x's device, before any chunking;
  2. noise: a generator on the model's device seeded with ``seed + 1`` draws, for each example in
     input order, ``torch.randn(K, D)`` (the rows are the K samples, in order; D = the model's
     ``noise_dim``, layer l taking its D_l columns in order); for K above
     ``NOISE_PIECE`` (65,536) the rows come as ``torch.randn(NOISE_PIECE, D)`` pieces, in order,
     the last one shorter.
Chunking, the memory budget and the number of worker threads therefore never change the numbers.
When even one example's K x D noise does not fit ``memory_mb``, its noise is drawn piece by piece
while the samples are decoded (``NoiseStream``), one example at a time: memory stays bounded for
any K (up to ``MAX_K``), with the same numbers.

Any model with the contract of ``aevb.models.base`` is evaluated by ``generic_chunk_stats``: each
block of noise goes through ``model.trace`` (z_l from the columns of eps for layer l; noise_dim =
sum of the layers' sizes), so flows, full covariances and L stochastic layers need nothing here.
The fast path above (``chunk_stats``) is a special case for a one-layer model with a diagonal
Gaussian q(z|x); on the models it covers both give the same numbers from the same noise
(tests/test_contracts.py, test_generic_evaluator_gives_the_fast_gaussian_evaluators_numbers).
"""

from __future__ import annotations

import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Independent, Normal, kl_divergence
from tqdm import tqdm

from aevb.models.base import closed_form_moments
from aevb.models.likelihoods import BernoulliLikelihood
from aevb.speed import gemm

LOG_2PI = math.log(2 * math.pi)
MAX_ROWS = 2048  # decoded samples per block: bigger blocks fall out of cache without making GEMMs faster
NOISE_PIECE = 65536  # rows of noise drawn per torch.randn call (see "Randomness" above)
MAX_K = 10**9  # importance samples per example, at most


def prepare_data(x: torch.Tensor, binarization: str, seed: int) -> torch.Tensor:
    """What the model is evaluated on: one seeded binarization of x for ``"dynamic"``, else x."""
    if binarization == "dynamic":
        outside = ~((x >= 0) & (x <= 1))
        if bool(outside.any()):
            i, j = (int(v) for v in outside.nonzero()[0])
            raise ValueError(f"dynamic binarization needs intensities in [0, 1], but example {i}, dimension {j} "
                             f"is {float(x[i, j]):g}; scale the data to [0, 1] or use binarization none")
        return torch.bernoulli(x, generator=torch.Generator(device=x.device).manual_seed(seed))
    if binarization not in ("static", "none"):
        raise ValueError(f"unknown binarization {binarization!r}; allowed: dynamic, static, none")
    return x


def posterior_loc_scale(q_z) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, sigma), each (B, D), of a diagonal Gaussian q(z|x) = Independent(Normal(mu, sigma), 1)."""
    base = q_z.base_dist if isinstance(q_z, Independent) else None
    if not isinstance(base, Normal) or q_z.reinterpreted_batch_ndims != 1:
        raise ValueError(f"evaluation needs a diagonal Gaussian posterior Independent(Normal(mu, sigma), 1); "
                         f"the encoder returned {type(q_z).__name__}")
    return base.loc, base.scale


def choose_chunks(num_params: int, latent_dim: int, k: int, memory_mb: int) -> tuple[int, int]:
    """(examples per chunk, samples per block) so that one block stays within ``memory_mb``.

    A block decodes samples x examples rows; a row costs about 4 copies of the decoder output
    (num_params floats) plus the hidden layers, in float32. Noise for a chunk is (K, B, D).
    """
    if memory_mb < 1:
        raise ValueError(f"memory_mb must be >= 1, got {memory_mb}")
    row_bytes = 4 * (4 * num_params + 2048 + 4 * latent_dim)
    rows = max(1, min(MAX_ROWS, memory_mb * 2**20 // row_bytes))
    samples = min(k, rows)
    examples = max(1, rows // samples)
    examples = max(1, min(examples, memory_mb * 2**20 // (4 * 4 * k * latent_dim)))
    return examples, samples


DIRECT_MAX_SAMPLES = 64  # up to this many samples per example, x . l is summed over the logits (SigmoidMLP)


class SigmoidMLP:
    """A tanh MLP rewritten exactly with sigmoids: tanh(a) = 2 sigmoid(2a) - 1, so scaling a layer's
    weights and bias by 2 and folding the "2s - 1" into the next layer (W' = 2W, b' = b - W 1)
    gives the same function. On CPUs torch's sigmoid is several times faster than its tanh."""

    def __init__(self, linears: list[nn.Linear]):
        self.layers = []
        for i, lin in enumerate(linears):
            w, b = lin.weight.detach().double(), lin.bias.detach().double()
            if i > 0:  # the input is 2 s - 1
                w, b = 2 * w, b - w.sum(1)
            if i < len(linears) - 1:  # followed by tanh(a) = 2 sigmoid(2 a) - 1
                w, b = 2 * w, 2 * b
            self.layers.append((w.to(lin.weight.dtype), b.to(lin.weight.dtype)))  # W (out, in), as nn.Linear

    @staticmethod
    def from_decoder(decoder) -> "SigmoidMLP | None":
        """The rewrite of ``decoder.net`` when it is Linear, Tanh, ..., Linear; else None."""
        net = getattr(decoder, "net", None)
        mods = list(net) if isinstance(net, nn.Sequential) else []
        if not mods or len(mods) % 2 == 0 or type(mods[0]) is not nn.Linear:
            return None
        if any(type(m) is not (nn.Linear if i % 2 == 0 else nn.Tanh) for i, m in enumerate(mods)):
            return None
        return SigmoidMLP(mods[0::2])

    def hidden(self, z: torch.Tensor) -> torch.Tensor:
        """The last hidden layer's output (rows of z flattened), the input of the output layer."""
        h = z.reshape(-1, z.shape[-1])
        for w, b in self.layers[:-1]:
            h = gemm.linear(h, w, b, "sigmoid")
        return h

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        w, b = self.layers[-1]
        return gemm.linear(self.hidden(z), w, b).reshape(*z.shape[:-1], -1)

    def bernoulli_log_likelihood(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) = x . l - sum_d softplus(l_d) with logits l = h W^T + b, for z (B, S, D) and
        x (B, num_dims). Returns (B, S). With many samples per example (S > ``DIRECT_MAX_SAMPLES``) the
        data term is computed as x . l = h . (W^T x) + b . x, a product with the last hidden layer h
        instead of a pass over the logits; with few (the ELBO's S = 1) W^T x would cost as much as the
        logits themselves, so x . l is summed over the logits (0.2 ms against 12 ms for 1,000 examples
        of the 784-500 layer, S = 1, one thread)."""
        num_examples, num_samples = z.shape[:2]
        w, b = self.layers[-1]
        h = self.hidden(z)  # (B * S, H)
        logits = gemm.linear(h, w, b)
        if num_samples <= DIRECT_MAX_SAMPLES:
            x_dot_l = (logits.view(num_examples, num_samples, -1) * x[:, None, :]).sum(-1)
            return x_dot_l - torch._C._nn.softplus(logits, 1.0, 20.0, out=logits).sum(-1).view(num_examples, num_samples)
        sum_softplus = torch._C._nn.softplus(logits, 1.0, 20.0, out=logits).sum(-1).view(num_examples, num_samples)
        x_w = torch.mm(x, w)  # (B, H): row b is W^T x_b
        b_x = torch.mv(x, b)  # (B,)
        x_dot_l = torch.bmm(h.view(num_examples, num_samples, -1), x_w[:, :, None])[..., 0] + b_x[:, None]
        return x_dot_l - sum_softplus


def bernoulli_log_likelihood(params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x|z) = sum_d x_d l_d - softplus(l_d) for logits l (B, S, num_dims), x (B, num_dims). Returns (B, S).

    x . l is a matrix-vector product when the chunk holds one example, never x copied S times."""
    if params.shape[0] == 1:
        x_dot_l = torch.mv(params[0], x[0])[None]
    else:
        x_dot_l = (params * x[:, None, :]).sum(-1)
    return x_dot_l - F.softplus(params).sum(-1)


# exact rewrites of log p(x|z) for likelihood classes; others use their distribution's log_prob
FAST_LOG_LIKELIHOODS = {BernoulliLikelihood: bernoulli_log_likelihood}


def log_likelihood(model, decode, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x|z) for z (B, S, D) and x (B, num_dims), in nats; ``decode`` maps z to parameters. Returns (B, S)."""
    if isinstance(decode, SigmoidMLP) and type(model.likelihood_module) is BernoulliLikelihood:
        return decode.bernoulli_log_likelihood(z, x)
    params = decode(z)
    fast = FAST_LOG_LIKELIHOODS.get(type(model.likelihood_module))
    if fast is not None:
        return fast(params, x)
    return model.likelihood_module(params).log_prob(x[:, None, :])


def _draw_rows(generator: torch.Generator, k: int, latent_dim: int, like: torch.Tensor):
    """The (K, D) noise of one example: ``randn(K, D)``, or ``NOISE_PIECE``-row pieces for large K, as (piece, D) tensors."""
    for start in range(0, k, NOISE_PIECE):
        yield torch.randn(min(NOISE_PIECE, k - start), latent_dim, generator=generator, device=like.device,
                          dtype=like.dtype)


def draw_noise(generator: torch.Generator, num_examples: int, k: int, latent_dim: int, like: torch.Tensor):
    """(B, K, D) standard-normal noise: ``torch.randn(K, D)`` per example, in order, from one generator
    (D = the model's ``noise_dim``: the sum of its layers' sizes)."""
    return torch.stack([torch.cat(list(_draw_rows(generator, k, latent_dim, like)))
                        for _ in range(num_examples)])


class NoiseStream:
    """The noise of one example, drawn piece by piece as it is consumed (same numbers as ``draw_noise``).

    ``shape`` is (1, K, D) like ``draw_noise(..., 1, K, D, ...)``; ``blocks(size)`` yields (1, S, D)
    tensors, S <= size, in order.
    """

    def __init__(self, generator: torch.Generator, k: int, latent_dim: int, like: torch.Tensor):
        self.generator, self.like, self.shape = generator, like, (1, k, latent_dim)

    def blocks(self, size: int):
        for piece in _draw_rows(self.generator, self.shape[1], self.shape[2], self.like):
            for start in range(0, len(piece), size):
                yield piece[None, start:start + size]


def noise_blocks(eps, size: int):
    """(B, S, D) blocks of the noise ``eps``: a (B, K, D) tensor or a ``NoiseStream``."""
    if isinstance(eps, NoiseStream):
        yield from eps.blocks(size)
        return
    for start in range(0, eps.shape[1], size):
        yield eps[:, start:start + size]


def is_diagonal_gaussian_one_layer(model, x: torch.Tensor) -> bool:
    """Whether ``chunk_stats`` (the fast path) applies: one stochastic layer and a diagonal Gaussian q(z|x)."""
    if getattr(model, "num_layers", 1) != 1:
        return False
    q_z = model.posterior(x[:1])
    return isinstance(q_z, Independent) and type(q_z.base_dist) is Normal and q_z.reinterpreted_batch_ndims == 1


@torch.no_grad()
def generic_chunk_stats(model, x: torch.Tensor, eps: torch.Tensor, block: int) -> dict:
    """``chunk_stats`` for any model through its contract: noise eps (B, K, noise_dim) gives z ~ q(z|x)
    in blocks of ``block`` draws via ``model.trace``. The KL uses closed forms where a layer has one.

    Returns:
        {"log_px", "recon", "kl", "elbo"}, each (B,) float64 in nats, and "mu" (B, noise_dim): the
        posterior means of all layers side by side, layer 1 in closed form where its family has
        one; otherwise, and for layers above, averages over the K draws of E[z_l|z_{l-1}] where
        that has a closed form (Rao-Blackwellised: an inactive unit's mean does not pick up the
        draws' noise), else of z_l (Monte Carlo error about sd(z_l|x) / sqrt(K)).
    """
    num_examples, k = eps.shape[:2]  # eps: a (B, K, D) tensor or a ``NoiseStream``
    zeros = lambda: torch.zeros(num_examples, dtype=torch.float64, device=x.device)  # noqa: E731
    run_max, run_sum, recon, kl_sum = torch.full_like(zeros(), -math.inf), zeros(), zeros(), zeros()
    z_sum, kl_exact = None, None
    for e in noise_blocks(eps, block):
        e = e.transpose(0, 1)  # (S, B, noise_dim)
        t = model.trace(x, e.shape[0], e, kl="analytic")
        log_w = (t.log_p_x_given_z + (t.log_p_z - t.log_q_z)).double().T  # (B, S)
        new_max = torch.maximum(run_max, log_w.max(1).values)
        run_sum = run_sum * torch.exp(run_max - new_max) + torch.exp(log_w - new_max[:, None]).sum(1)
        run_max = new_max
        recon += t.log_p_x_given_z.double().sum(0)
        if t.kl.dim() == 1:
            kl_exact = t.kl.double()
        else:
            kl_sum += t.kl.double().sum(0)
        z_block = torch.cat([m.double().sum(0) if m.dim() == 3 else m.double() * e.shape[0]  # (B, D_l) each
                             for m in t.z_means], dim=-1)  # (B, noise_dim): sum over the S draws
        z_sum = z_block if z_sum is None else z_sum + z_block
    recon /= k
    kl = kl_exact if kl_exact is not None else kl_sum / k
    mu = (z_sum / k).to(x.dtype)
    first = closed_form_moments(model.posterior(x))
    if first is not None:  # exactly, not through the sum
        mu[:, :first[0].shape[-1]] = first[0]
    return {"log_px": run_max + run_sum.log() - math.log(k), "recon": recon, "kl": kl, "elbo": recon - kl, "mu": mu}


@torch.no_grad()
def chunk_stats(model, decode, x: torch.Tensor, eps: torch.Tensor, block: int) -> dict:
    """Per-example IWAE bound, ELBO terms and posterior mean for one chunk x (B, num_dims),
    with z_k = mu + sigma * eps_k for the noise eps (B, K, D), decoded ``block`` samples at a time.

    Returns:
        {"log_px", "recon", "kl", "elbo"}, each (B,) float64 in nats, and "mu" (B, D).
    """
    q_z = model.posterior(x)
    p_z = model.prior()
    mu, sigma = posterior_loc_scale(q_z)  # (B, D)
    num_examples, latent_dim = mu.shape
    k = eps.shape[1]
    mu, sigma = mu[:, None, :], sigma[:, None, :]
    log_q_norm = -sigma.log().sum(-1) - 0.5 * latent_dim * LOG_2PI  # (B, 1)
    run_max = torch.full((num_examples,), -math.inf, dtype=torch.float64, device=mu.device)
    run_sum = torch.zeros(num_examples, dtype=torch.float64, device=mu.device)
    recon = torch.zeros(num_examples, dtype=torch.float64, device=mu.device)
    log_ratio = torch.zeros(num_examples, dtype=torch.float64, device=mu.device)
    for e in noise_blocks(eps, block):  # (B, S, D)
        z = mu + sigma * e
        log_p_x_given_z = log_likelihood(model, decode, z, x)  # (B, S)
        log_q_z = log_q_norm - 0.5 * e.square().sum(-1)
        log_p_z = p_z.log_prob(z)
        log_w = (log_p_x_given_z + log_p_z - log_q_z).double()
        new_max = torch.maximum(run_max, log_w.max(1).values)
        run_sum = run_sum * torch.exp(run_max - new_max) + torch.exp(log_w - new_max[:, None]).sum(1)
        run_max = new_max
        recon += log_p_x_given_z.double().sum(1)
        log_ratio += (log_q_z - log_p_z).double().sum(1)
    recon /= k
    try:
        if p_z.batch_shape not in ((), q_z.batch_shape):  # p(z|y) laid out (B, 1) for the blocks: no closed form here
            raise NotImplementedError
        kl = kl_divergence(q_z, p_z).double()
    except NotImplementedError:  # no closed form registered: Monte Carlo on the same draws
        kl = log_ratio / k
    return {"log_px": run_max + run_sum.log() - math.log(k), "recon": recon, "kl": kl, "elbo": recon - kl,
            "mu": mu[:, 0]}


def resolve_workers(workers: int | None, device: torch.device) -> int:
    """Worker threads: None -> torch's thread count on the CPU, 1 on accelerators."""
    if workers is None:
        workers = torch.get_num_threads() if device.type == "cpu" else 1
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return workers


def run_jobs(fn, jobs, workers: int):
    """Yield fn(job) for each job, in order. With workers > 1 the jobs run in that many threads,
    each single-threaded inside torch (torch's thread count is 1 meanwhile, then restored): whole
    chunks in parallel do not stall at OpenMP barriers when another process holds a core."""
    if workers == 1:
        yield from map(fn, jobs)
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers) as pool:
            pending: deque = deque()
            for job in jobs:
                pending.append(pool.submit(fn, job))
                if len(pending) > 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
    finally:
        torch.set_num_threads(previous)


def _num_params(model, x: torch.Tensor) -> int:
    lik = model.likelihood_module
    return getattr(lik, "params_per_dim", 1) * getattr(lik, "num_dims", x.shape[-1])


@torch.no_grad()
def importance_sample(model, x: torch.Tensor, *, k: int = 5000, seed: int = 1234, memory_mb: int = 512,
                      binarization: str = "none", progress: bool = True, max_examples: int | None = None,
                      workers: int | None = None, labels: torch.Tensor | None = None) -> dict:
    """Per-example L_K, ELBO, its terms and posterior means over x (N, num_dims), in input order.

    Args:
        model: any model with the contract of ``aevb.models.base``; evaluated on its own device.
        x: (N, num_dims) data, on any device.
        k: K, importance samples per example.
        seed: seeds the binarization and the noise (see the module docstring).
        memory_mb: memory budget of one block of work.
        binarization: "dynamic" binarizes x once with the seed; "static"/"none" use x as is.
        progress: show a tqdm bar over chunks.
        max_examples: cap on examples per chunk (None: from memory_mb).
        workers: chunks evaluated in parallel threads (None: torch's thread count on the CPU, 1
            elsewhere); the numbers do not depend on it. memory_mb is shared among them.
        labels: (N,) class labels, required by a conditional model (``model.conditional``): its
            numbers are then log p(x|y) (``models/conditional.py``); ignored by other models.

    Returns:
        {"log_px", "elbo", "recon", "kl"}: (N,) float64 tensors on the CPU, in nats;
        "mu": (N, noise_dim) posterior means of all layers side by side, float32 on the CPU.
    """
    if k < 1 or k > MAX_K:
        raise ValueError(f"k (importance samples) must be between 1 and {MAX_K:,}, got {k}")
    if x.dim() != 2 or len(x) == 0:
        raise ValueError(f"expected data of shape (N, num_dims) with N >= 1, got {tuple(x.shape)}")
    device = next(model.parameters()).device
    x = prepare_data(x, binarization, seed)
    workers = resolve_workers(workers, device)
    noise_dim = getattr(model, "noise_dim", model.latent_dim)
    examples, block = choose_chunks(_num_params(model, x), noise_dim, k, max(1, memory_mb // workers))
    if max_examples:
        examples = max(1, min(examples, max_examples))
    generator = torch.Generator(device=device).manual_seed(seed + 1)
    conditional = getattr(model, "conditional", False)
    if conditional and (labels is None or len(labels) != len(x)):
        raise ValueError(f"a conditional model scores log p(x|y): give one label per example ({len(x)}), "
                         f"got {'none' if labels is None else len(labels)}")
    like = next(model.parameters())
    lab = labels if conditional and labels is not None else None
    probe = model.given(lab[:1]) if lab is not None else model
    fast = is_diagonal_gaussian_one_layer(probe, x[:1].to(device))  # else the generic path through the contract
    decode = SigmoidMLP.from_decoder(model.decoder) or model.decoder if fast and not conditional else None
    if 16 * k * noise_dim > max(1, memory_mb // workers) * 2**20:  # one example's noise exceeds its share
        workers = 1  # the noise is drawn inside chunk_stats, so examples must run in order
        jobs = ((x[i:i + 1].to(device), NoiseStream(generator, k, noise_dim, like),
                 None if lab is None else lab[i:i + 1]) for i in range(len(x)))
    else:
        jobs = ((x[i:i + examples].to(device), draw_noise(generator, len(x[i:i + examples]), k, noise_dim, like),
                 None if lab is None else lab[i:i + examples])
                for i in range(0, len(x), examples))

    def run_chunk(job):
        if job[2] is None:
            return chunk_stats(model, decode, job[0], job[1], block) if fast else \
                generic_chunk_stats(model, job[0], job[1], block)
        if not fast:
            return generic_chunk_stats(model.given(job[2]), job[0], job[1], block)
        labelled = model.given(job[2], examples_first=True)  # z in blocks (B, S, D)
        return chunk_stats(labelled, labelled.decoder, job[0], job[1], block)

    parts: dict[str, list] = {"log_px": [], "elbo": [], "recon": [], "kl": [], "mu": []}
    with tqdm(total=len(x), desc=f"L_{k}", unit="ex", disable=not progress, leave=False, mininterval=0.5) as bar:
        for stats in run_jobs(run_chunk, jobs, workers):
            for key in parts:
                parts[key].append(stats[key].cpu())
            bar.update(len(stats["log_px"]))
    out = {key: torch.cat(v) for key, v in parts.items()}
    out["mu"] = out["mu"].float()
    return out
