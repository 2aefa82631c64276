"""aevb.speed.gemm: products on oneDNN or torch agree with float64 products to float32 rounding."""

import subprocess
import sys
import warnings

import pytest
import torch
from conftest import REPO

from aevb.speed import gemm


def operands(m, k, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, k, generator=g), torch.randn(n, k, generator=g), torch.randn(n, generator=g)


def relative_error(y: torch.Tensor, reference: torch.Tensor) -> float:
    return float((y.double() - reference).abs().max() / reference.abs().max())


@pytest.mark.parametrize("shape", [(100, 500, 784), (100, 784, 500), (7, 20, 500), (2048, 200, 784)])
def test_linear_and_matmul_equal_float64_products_to_float32_rounding(matmul_backend, shape):
    m, k, n = shape
    x, w, b = operands(m, k, n)
    reference = x.double() @ w.double().T + b.double()
    torch_error = relative_error(torch.addmm(b, x, w.t()), reference)  # what torch's own float32 product reaches
    y = gemm.linear(x, w, b)
    assert y.shape == (m, n) and y.dtype == torch.float32
    assert relative_error(y, reference) < max(4 * torch_error, 2e-6)  # float32 accumulation, not bf16 (~1e-2)
    # matmul with transposed views as operands, as the backward pass uses them
    delta = torch.randn(m, n, generator=torch.Generator().manual_seed(1))
    for a, bb in ((delta, w), (delta.t(), x), (x, w.t())):
        ref = a.double() @ bb.double()
        out = gemm.matmul(a, bb)
        assert out.shape == ref.shape and out.is_contiguous()
        assert relative_error(out, ref) < max(4 * relative_error(a @ bb, ref), 2e-6)


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
def test_activations_inside_the_product_equal_the_activation_of_the_product(matmul_backend, activation):
    x, w, b = operands(50, 30, 40, seed=2)
    pre = x.double() @ w.double().T + b.double()
    expected = getattr(torch, activation)(pre)
    atol = 1e-6 * float(pre.abs().max())  # float32 rounding of the product; these activations have slope <= 1
    torch.testing.assert_close(gemm.linear(x, w, b, activation).double(), expected, rtol=0, atol=atol)
    torch.testing.assert_close(gemm.linear(x, w, None, activation).double(), getattr(torch, activation)(pre - b),
                               rtol=0, atol=atol)
    with pytest.raises(ValueError, match="allowed: tanh, relu, sigmoid"):
        gemm.linear(x, w, b, "gelu")


def test_float64_and_the_torch_backend_give_torch_bits_exactly(matmul_backend):
    x, w, b = operands(9, 6, 5)
    xd, wd, bd = x.double(), w.double(), b.double()
    assert torch.equal(gemm.linear(xd, wd, bd), torch.addmm(bd, xd, wd.t()))  # float64 never leaves torch
    assert torch.equal(gemm.matmul(xd, wd.t()), torch.mm(xd, wd.t()))
    if matmul_backend == "torch":
        assert not gemm.uses_onednn(x)
        assert torch.equal(gemm.linear(x, w, b), torch.addmm(b, x, w.t()))
    else:
        assert gemm.uses_onednn(x) and not gemm.uses_onednn(xd)


def test_backend_from_the_environment_and_a_clear_error_for_a_bad_name():
    code = "from aevb.speed import gemm; print(gemm.backend())"
    env = {"PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env={**env, "AEVB_MATMUL": "torch"}, capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.strip() == "torch", out.stderr
    out = subprocess.run([sys.executable, "-c", code], env={**env, "AEVB_MATMUL": "mkl"}, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0 and "AEVB_MATMUL='mkl'" in out.stderr and "allowed: auto, onednn, torch" in out.stderr
    with pytest.raises(ValueError, match="allowed: onednn, torch"):
        gemm.set_backend("blas")


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu"])
def test_mlp_forward_and_gradients_equal_float64_autograd(matmul_backend, activation):
    """nets.MLP runs its Linear (+ tanh/ReLU) layers through gemm.linear_module_forward; values and
    gradients (inputs, weights, biases) match float64 autograd through torch's own modules."""
    from aevb.models.nets import MLP

    torch.manual_seed(0)
    net = MLP(12, [20, 16], 6, activation)
    ref_net = MLP(12, [20, 16], 6, activation).double()
    ref_net.load_state_dict(net.state_dict())
    z = torch.randn(3, 5, 12, requires_grad=True)  # leading sample dims, as the decoder sees them
    z64 = z.detach().double().requires_grad_()
    weights = torch.randn(3, 5, 6)
    (net(z) * weights).sum().backward()
    (ref_net(z64) * weights.double()).sum().backward()  # float64: torch's own modules, whatever the backend
    torch.testing.assert_close(net(z).double(), ref_net(z64), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(z.grad.double(), z64.grad, rtol=1e-5, atol=1e-5)
    for (name, p), q in zip(net.named_parameters(), ref_net.parameters()):
        torch.testing.assert_close(p.grad.double(), q.grad, rtol=1e-5, atol=1e-5, msg=name)
    with torch.no_grad():  # evaluation: forward only
        torch.testing.assert_close(net(z).double(), ref_net(z64), rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_traced_mlp_holds_only_torch_ops_and_computes_the_same():
    from aevb.models.nets import MLP

    torch.manual_seed(0)
    net = MLP(12, [20], 6, "tanh")
    x = torch.randn(4, 12)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traced = torch.jit.trace(net, x, check_trace=False)
    assert not [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]  # no shape tests in the trace
    assert "mkldnn" not in str(traced.graph)
    torch.testing.assert_close(traced(x), net(x), rtol=1e-5, atol=1e-6)


def test_odd_layouts_and_empty_batches_give_torchs_products(matmul_backend):
    """Expanded (stride 0), strided and transposed operands, one row and no rows, through gemm and nets.MLP."""
    from aevb.models.nets import MLP

    g = torch.Generator().manual_seed(3)
    w, b = torch.randn(7, 5, generator=g), torch.randn(7, generator=g)
    cases = {"expanded": torch.randn(1, 5, generator=g).expand(4, -1), "row-strided": torch.randn(4, 9, generator=g)[:, :5],
             "column-strided": torch.randn(4, 10, generator=g)[:, ::2], "transposed": torch.randn(5, 4, generator=g).t(),
             "one row": torch.randn(1, 5, generator=g), "no rows": torch.randn(0, 5, generator=g)}
    torch.manual_seed(0)
    net = MLP(5, [6], 3, "tanh")
    for name, x in cases.items():
        dense = x.contiguous()
        torch.testing.assert_close(gemm.linear(x, w, b), torch.addmm(b, dense, w.t()), rtol=1e-5, atol=1e-5, msg=name)
        torch.testing.assert_close(gemm.matmul(x, w.t()), dense @ w.t(), rtol=1e-5, atol=1e-5, msg=name)
        leaf = dense.clone().requires_grad_()
        out = net(leaf)
        out.sum().backward()
        assert out.shape == (len(x), 3) and leaf.grad.shape == x.shape, name
        with torch.no_grad():
            torch.testing.assert_close(out, torch.nn.Sequential.forward(net, dense), rtol=1e-5, atol=1e-6, msg=name)
