"""Naive float64 formulas of the activations, written independently of polycom.

Tests compare polycom's reference and fast paths against these. They are the
paper's definitions typed out directly (no overflow care, no dtype handling):
evaluate them in float64 on values where that is exact enough.
"""

import torch
import torch.nn.functional as F


def naive_poly_relu(x, weight, bias):
    x, weight, bias = x.double(), weight.double(), bias.double()
    r = weight.shape[0]
    out = bias[0] + torch.zeros_like(x)
    for i in range(1, r + 1):
        out = out + weight[r - i] * F.relu(x) ** i
    return out


def naive_poly_norm(x, weight, bias, eps=1e-6):
    x, weight, bias = x.double(), weight.double(), bias.double()
    r = weight.shape[0]
    out = bias[0] + torch.zeros_like(x)
    for i in range(1, r + 1):
        z = x**i
        out = out + weight[r - i] * z / torch.sqrt((z * z).mean(dim=-1, keepdim=True) + eps)
    return out


def naive_gated_poly_norm(gate, up, weight, bias, eps=1e-6):
    return naive_poly_norm(gate, weight, bias, eps) * up.double()


def naive_poly_com(x, weight, bias, base, kind, eps=1e-6, prelu_slope=0.25):
    x, weight, bias = x.double(), weight.double(), bias.double()
    rho = {
        "relu": F.relu,
        "prelu": lambda t: torch.where(t >= 0, t, prelu_slope * t),
        "gelu": lambda t: 0.5 * t * (1 + torch.erf(t / 2**0.5)),
        "silu": lambda t: t / (1 + torch.exp(-t)),
        "sigmoid": lambda t: 1 / (1 + torch.exp(-t)),
        "rmsnorm": lambda t: t / torch.sqrt((t * t).mean(-1, keepdim=True) + eps),
    }[base]
    r = weight.shape[0]
    out = bias[0] + torch.zeros_like(x)
    for i in range(1, r + 1):
        term = rho(x) ** i if kind == "I" else rho(x**i)
        out = out + weight[r - i] * term
    return out


# Polynormer (Deng, Yue, Zhang, ICLR 2024, arXiv 2403.01232): dense O(N^2) forms of its layers.
# Edges are (2, E) source -> target index pairs; A[i, j] counts the edges j -> i.


def naive_adjacency(edge_index, n):
    a = torch.zeros(n, n, dtype=torch.float64)
    for j, i in edge_index.t().tolist():
        a[i, j] += 1
    return a


def naive_linear_attention(q, k, v, eps=1e-6):
    """a_i = sum_j s_ij v_j / (sum_j s_ij + eps) with s_ij = sigmoid(q_i) . sigmoid(k_j), per head; (N, H, d)."""
    q, k, v = q.double(), k.double(), v.double()
    out = torch.empty_like(v)
    for h in range(q.shape[1]):
        s = torch.sigmoid(q[:, h]) @ torch.sigmoid(k[:, h]).t()  # (N, N), the scores the O(N) form never builds
        out[:, h] = s @ v[:, h] / (s.sum(1, keepdim=True) + eps)
    return out


def naive_softmax_attention(q, k, v):
    q, k, v = q.double(), k.double(), v.double()
    out = torch.empty_like(v)
    for h in range(q.shape[1]):
        e = torch.exp(q[:, h] @ k[:, h].t() / q.shape[-1] ** 0.5)
        out[:, h] = e @ v[:, h] / e.sum(1, keepdim=True)
    return out


def naive_gat(x, edge_index, weight, att_src, att_dst, heads, slope=0.2):
    """GAT (Velickovic et al. 2018) without self-loops or bias, heads concatenated:
    z = x W^T; e_ij = LeakyReLU(a_src . z_j + a_dst . z_i); out_i = sum_{j -> i} softmax_j(e_ij) z_j."""
    x, n = x.double(), x.shape[0]
    adj = naive_adjacency(edge_index, n)
    z = (x @ weight.double().t()).view(n, heads, -1)
    out = []
    for h in range(heads):
        src = z[:, h] @ att_src.double().reshape(heads, -1)[h]
        dst = z[:, h] @ att_dst.double().reshape(heads, -1)[h]
        e = F.leaky_relu(dst[:, None] + src[None, :], slope)  # (target i, source j)
        w = adj * torch.exp(e)
        denom = w.sum(1, keepdim=True)
        out.append(torch.where(denom > 0, w / denom.clamp_min(1e-300), 0.0) @ z[:, h])
    return torch.cat(out, dim=1)


def naive_gcn(x, edge_index, weight, bias):
    """GCN (Kipf & Welling 2017): D^-1/2 (A + I) D^-1/2 x W^T + b, D the in-degrees of A + I."""
    n = x.shape[0]
    a = naive_adjacency(edge_index, n) + torch.eye(n, dtype=torch.float64)
    d = a.sum(1) ** -0.5
    return d[:, None] * a * d[None, :] @ (x.double() @ weight.double().t()) + bias.double()


def naive_layer_norm(x, weight, bias, eps=1e-5):
    x = x.double()
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * weight.double() + bias.double()
