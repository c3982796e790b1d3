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
