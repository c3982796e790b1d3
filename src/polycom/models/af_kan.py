r"""AF-KAN as an MLP kind: two parameter-reduced KAN layers d -> h -> d.

Ta & Tran 2025, "AF-KAN: Activation Function-Based Kolmogorov-Arnold Networks"
(arXiv:2503.06112). One AF-KAN layer n_in -> n_out (our reading; what the paper's text
confirmed and what is our choice is listed in ``polycom.activations.af_kan``):

    y = W phi(LN(x)),   phi(z) = sum_i c_i [f(z - s_i) f(e_i - z)]^2 16 / w^4   (elementwise),

LN a layer normalisation with gain and bias (the paper's data normalisation), phi the
quad1 basis combination of ``activations/af_kan.py`` with f = SiLU, G = 3, k = 3, and W
(n_out, n_in) the edge weights: edge (o, j) carries the function W_oj phi(z_j), so the
layer has the weights of a linear layer plus 2 n_in + (G + k). The MLP replacement is
the KAN [d, h, d]:

    AFKAN(x) = down(phi_2(LN_2(up(phi_1(LN_1(x)))))),

weights 2 d h + 2 (d + h) (``parameters``; the 2 (G + k) coefficients are the
activation's own, like PolyNorm's), so ``matched_hidden`` gives it a width slightly
below the plain MLP's (d = 96: 384 -> 376 at multiple 64).

MoE: ``AFKANExperts`` holds every expert's W (stacked, grouped matmul) and LN gains and
biases (per expert); the coefficients c are shared by the experts (``per_layer``) or
per expert (``per_expert``), as for the elementwise activations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..activations.af_kan import af_kan_function
from ..registry import activation_info
from .grouped import ExpertGroups, StackedExperts, grouped_linear
from .mlp import MLPKind, register_mlp_kind

__all__ = ["AFKAN", "AFKANExperts", "af_kan_parameters"]

LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, used by the dense and the expert layers alike


def af_kan_parameters(d_model: int, hidden: int) -> int:
    """2 d h edge weights + LN gains and biases of both layers, 2 (d + h)."""
    return 2 * d_model * hidden + 2 * (d_model + hidden)


def _check_kind(activation: str) -> None:
    if activation_info(activation).mlp_kind != "afkan":
        raise ValueError(f"argument 'activation' must be an activation of MLP kind 'afkan' (e.g. 'af_kan'), "
                         f"got {activation!r}")


class AFKAN(nn.Module):
    """down(phi_2(LN_2(up(phi_1(LN_1(x)))))): the AF-KAN [d, h, d] (module docstring).

    ``act`` is phi_2, the function on the hidden vector (where the other MLPs have
    their activation: hooks, the optimizer's activation group); ``input_act`` is phi_1.
    """

    def __init__(self, d_model: int, hidden: int, activation: str = "af_kan", activation_kwargs: dict | None = None):
        super().__init__()
        _check_kind(activation)
        info = activation_info(activation)
        self.hidden = hidden
        self.input_norm = nn.LayerNorm(d_model, eps=LAYER_NORM_EPS)
        self.input_act = info.build(**(activation_kwargs or {}))
        self.up_proj = nn.Linear(d_model, hidden, bias=False)
        self.hidden_norm = nn.LayerNorm(hidden, eps=LAYER_NORM_EPS)
        self.act = info.build(**(activation_kwargs or {}))
        self.down_proj = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.up_proj(self.input_act(self.input_norm(x)))  # (..., h)
        return self.down_proj(self.act(self.hidden_norm(u)))  # (..., d)


class AFKANExperts(StackedExperts):
    """E AF-KANs with stacked weights: row i is ``AFKAN`` with expert ``groups.expert[i]``'s tensors.

    Per expert: ``up_proj`` (E, h, d), ``down_proj`` (E, d, h), the LN gains and biases
    (flat (E * n,)); coefficients ``input_coefficients`` / ``hidden_coefficients``: (G + k,)
    shared, or flat (E * (G + k),) with ``per_expert_coefficients``. Two grouped matmuls,
    no loop over experts.
    """

    def __init__(self, d_model: int, hidden: int, num_experts: int, activation: str = "af_kan",
                 activation_kwargs: dict | None = None, per_expert_coefficients: bool = False):
        super().__init__(num_experts)
        _check_kind(activation)
        phi = activation_info(activation).build(**(activation_kwargs or {}))  # validates; knots and init
        self.hidden, self.base_activation = hidden, phi.base_activation
        self.starts, self.ends = phi.starts, phi.ends  # the knots, Python floats
        self.per_expert_coefficients = per_expert_coefficients
        for layer, width in (("input", d_model), ("hidden", hidden)):
            self.stacked_vector(f"{layer}_norm_weight", width, 1.0)
            self.stacked_vector(f"{layer}_norm_bias", width, 0.0)
            name = f"{layer}_coefficients"
            if per_expert_coefficients:
                self.stacked_vector(name, phi.num_basis, 0.0)
                with torch.no_grad():
                    getattr(self, name).view(num_experts, -1).copy_(phi.coefficients.detach())
            else:
                self.register_parameter(name, nn.Parameter(phi.coefficients.detach().clone()))
        self.stacked("up_proj", hidden, d_model)
        self.stacked("down_proj", d_model, hidden)

    def _layer_input(self, x: torch.Tensor, layer: str, groups: ExpertGroups) -> torch.Tensor:
        """phi(LN(x)) with each row's expert's gain, bias and coefficients; x (M, n) -> (M, n)."""
        z = F.layer_norm(x, x.shape[-1:], eps=LAYER_NORM_EPS)
        z = z * self.per_row(f"{layer}_norm_weight", groups) + self.per_row(f"{layer}_norm_bias", groups)
        if self.per_expert_coefficients:
            c = self.per_row(f"{layer}_coefficients", groups).unsqueeze(1)  # (M, 1, G + k) against (M, n, G + k)
        else:
            c = getattr(self, f"{layer}_coefficients")
        return af_kan_function(z, c, self.starts, self.ends, self.base_activation)

    def forward(self, xs: torch.Tensor, groups: ExpertGroups) -> torch.Tensor:
        u = grouped_linear(self._layer_input(xs, "input", groups), self.up_proj, groups)  # (M, h)
        return grouped_linear(self._layer_input(u, "hidden", groups), self.down_proj, groups)  # (M, d)


register_mlp_kind(MLPKind("afkan", "down(phi(LN(up(phi(LN(x)))))), AF-KAN [d, h, d] (Ta & Tran 2025)",
                          af_kan_parameters, build=AFKAN, build_experts=AFKANExperts))
