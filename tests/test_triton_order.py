"""Orders the Triton kernels do not hold never reach them (they would drop terms silently)."""

import pytest
import torch

from polycom.ops import dispatch


@pytest.mark.parametrize("order", [5, 8])
def test_explicit_triton_rejects_unsupported_order(order):
    x = torch.randn(2, 8)
    with pytest.raises(ValueError, match="order"):
        dispatch.select_implementation(x, "triton", order)


@pytest.mark.parametrize("order", [5, 8])
def test_auto_never_picks_triton_for_unsupported_order(order, monkeypatch):
    monkeypatch.setattr(dispatch, "_triton_can_run", lambda x: True)
    x = torch.randn(2, 8)
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    assert dispatch.select_implementation(x, "auto", order) != "triton"
    assert dispatch.select_implementation(x, "auto", 3) == "triton"


# Inputs of moderate magnitude (|x| <~ 1.5 after scaling) keep x^8 near 1e1, so fp32 rounding
# stays around 1e-6 relative; 1e-4 leaves room for the accumulated sums of high powers.
@pytest.mark.parametrize("impl", ["reference", "eager"])
@pytest.mark.parametrize("order", range(1, 9))
def test_any_order_forward_matches_naive(order, impl):
    from naive import naive_poly_norm, naive_poly_relu

    from polycom import functional as F

    torch.manual_seed(order)
    x = torch.randn(3, 7) * 0.5
    w, b = torch.randn(order) * 0.3, torch.randn(1) * 0.3
    got = F.poly_relu(x, w, b, implementation=impl)
    want = naive_poly_relu(x.double(), w.double(), b.double())
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
    got = F.poly_norm(x, w, b, implementation=impl)
    want = naive_poly_norm(x.double(), w.double(), b.double())
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
