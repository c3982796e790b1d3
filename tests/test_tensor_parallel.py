"""Tensor parallelism (``train/tensor_parallel.py``, ``ops/sharded_poly_norm.py``) against one process.

Every multi-rank check runs in one spawn of 2 gloo processes (``_run_ranks``; spawning and
importing cost seconds per spawn): both ranks train each model with TP=2, then each rank trains
half of the models unsharded (TP=1) from the same seed and batches and compares. Checked per
activation, dense and MoE (PolyReLU, PolyNorm and gated PolyNorm also with per-expert
coefficients, the latter two as one grouped op): in fp32, the logits and every gradient of one
step; in fp64, the losses of 20 steps of the Trainer's AdamW with gradient clipping, and the
final parameters.

Tolerance 1e-6 (absolute; logits, gradients and parameters are below 2 in size, the losses
about 4). The sharded model adds the same products in another order (row-parallel matmuls sum
two partial products, PolyNorm's statistics are float64 sums), so the two differ by rounding:
the fp32 step by at most 1.7e-7 (measured). The 20 steps run in fp64, because in fp32 training
amplifies rounding until the check says little (measured with a 2-block MoE PolyReLU: 1e-7 in
the loss up to step 11, 8.8e-5 at step 19, as a pre-activation within rounding of 0 falls on the
other side of ReLU's kink and AdamW turns the changed gradient into a step of size lr). The
model still computes RMSNorm, QK-norm, the router and the loss in fp32 at any parameter dtype,
so the fp64 run differs by fp32 rounding too: losses by at most 4.8e-7 (one fp32 ulp of the
loss), parameters by at most 1.1e-8 (measured). A TP bug is far above these: QK-norm weights
without their gradient summed gave 2e-3 in the gradients and 4e-2 in the parameters; the
shard-local PolyNorm of the official code gives 9e-2 in the logits
(``test_shard_local_polynorm_differs``).
"""

from __future__ import annotations

import os
import socket
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from polycom.errors import UsageError
from polycom.models import ModelConfig, build_model
from polycom.models.config import MoEConfig
from polycom.ops.sharded_poly_norm import DOUBLE_BACKWARD_ERROR
from polycom.registry import activation_info, list_activations
from polycom.train.config import OptimSection
from polycom.train.optim import build_optimizer, clip_grads_to_norm_, total_grad_norm
from polycom.train.tensor_parallel import check_tensor_parallel, tensor_parallel_rule

TOL = 1e-6  # see the module docstring
ACTIVATIONS = ("relu", "swiglu", "polyrelu", "polynorm", "gated_polynorm")
# (activation, MoE, per-expert coefficients). MoE PolyReLU runs per expert only (per layer, its
# module is the dense one's); per-expert PolyNorm and gated PolyNorm are models.moe.ExpertActivations'
# grouped op, whose coefficients the TP plan swaps in that module's forward.
CASES = ([(a, False, False) for a in ACTIVATIONS] + [(a, True, a == "polyrelu") for a in ACTIVATIONS]
         + [("polynorm", True, True), ("gated_polynorm", True, True)])
STEPS = 20
CLIP = 1.0  # the gradient norms of these models are 1.3 to 3: clipping acts at every step


def _config(activation: str, moe: bool, per_expert: bool = False) -> ModelConfig:
    # Eager kernels: the compiled ones would spend seconds in Inductor per variant and process.
    kwargs = {} if activation in ("relu", "swiglu") else {"implementation": "eager"}
    # One block: the residual stream's gradient still passes through every sharded layer into the
    # embeddings; a second block doubled the test's time.
    return ModelConfig(vocab_size=64, n_layers=1, d_model=32, n_heads=4, n_kv_heads=2, max_seq_len=16,
                       ffn_hidden=96, ffn_multiple_of=8, activation=activation, activation_kwargs=kwargs,
                       qk_norm=True,
                       moe=MoEConfig(num_experts=4, top_k=2, expert_hidden=48, shared_expert=True,
                                     coefficients="per_expert" if per_expert else "per_layer")
                       if moe else None)


def _batches(vocab: int):
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, vocab, (2, 16), generator=g) for _ in range(STEPS)]


def _full(t):
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _first_step(model, ids):
    """(logits, {name: gradient}) of one forward and backward."""
    out = model(ids[:, :-1], ids[:, 1:])
    out.loss.backward()
    return out.logits.detach().clone(), {n: _full(p.grad).clone() for n, p in model.named_parameters()}


def _train(model, batches):
    """([losses], {name: final parameter}): the Trainer's optimizer (AdamW groups) and gradient
    clipping, at a limit the gradient norms exceed."""
    opt = build_optimizer(model, OptimSection(lr=3e-3, grad_clip=CLIP))
    params = list(model.parameters())
    losses = []
    for ids in batches:
        out = model(ids[:, :-1], ids[:, 1:])
        out.loss.backward()
        clip_grads_to_norm_(params, CLIP, _full(total_grad_norm([p.grad for p in params])))
        opt.step()
        opt.zero_grad()
        losses.append(out.loss.item())
    return losses, {n: _full(p.detach()).clone() for n, p in model.named_parameters()}


def _run(activation: str, moe: bool, per_expert: bool, mesh=None, fsdp_mesh=None) -> dict:
    """The numbers compared, from the model sharded over ``mesh`` (None: unsharded), then with
    FSDP2 over ``fsdp_mesh`` as the Trainer's ``fully_shard`` units: activation, block, root."""
    from torch.distributed.fsdp import fully_shard

    from polycom.train.tensor_parallel import apply_tensor_parallel

    cfg = _config(activation, moe, per_expert)
    batches = _batches(cfg.vocab_size)
    out = {}
    for dtype in (torch.float32, torch.float64):
        torch.manual_seed(0)
        model = build_model(cfg).to(dtype)
        if mesh is not None:
            model = apply_tensor_parallel(model, mesh)
        if fsdp_mesh is not None:
            for block in model.layers:
                fully_shard(block.mlp.act, mesh=fsdp_mesh)
                fully_shard(block, mesh=fsdp_mesh)
            fully_shard(model, mesh=fsdp_mesh)
        if dtype == torch.float32:
            out["logits"], out["grads"] = _first_step(model, batches[0])
        else:
            out["losses"], out["params"] = _train(model, batches)
    return out


def _case_name(activation: str, moe: bool, per_expert: bool) -> str:
    return f"{'moe' if moe else 'dense'}{'-per_expert' if per_expert else ''}-{activation}"


def _max_diff(a, b) -> float:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        return max(_max_diff(a[k], b[k]) for k in a)
    return (torch.as_tensor(a) - torch.as_tensor(b)).abs().max().item()


def _shard_local_difference(mesh) -> float:
    """Max |logits| difference between TP=1 and TP=2 with PolyNorm normalising its shard only."""
    from polycom.train.tensor_parallel import apply_tensor_parallel

    cfg = _config("polynorm", False)
    ids = _batches(cfg.vocab_size)[0]
    torch.manual_seed(0)
    single = build_model(cfg)(ids).logits
    torch.manual_seed(0)
    sharded = apply_tensor_parallel(build_model(cfg), mesh)
    for block in sharded.layers:
        block.mlp.act.statistics_group = None  # the official code: RMS over the local shard
    return (sharded(ids).logits - single).abs().max().item()


def _op_checks(mesh) -> dict:
    """The sharded op on half a row against the single-rank op on the whole row; double backward refused."""
    from polycom.activations.polynorm import poly_norm
    from polycom.activations.grouped_polynorm import grouped_gated_poly_norm

    group, rank = mesh.get_group(), dist.get_rank()
    g = torch.Generator().manual_seed(3)
    x, up, gy = (torch.randn(5, 12, generator=g, dtype=torch.float64) * 3 for _ in range(3))
    w, b = torch.randn(3, generator=g, dtype=torch.float64), torch.randn(1, generator=g, dtype=torch.float64)
    we, be = torch.randn(3, 3, generator=g, dtype=torch.float64), torch.randn(3, 1, generator=g, dtype=torch.float64)
    experts = torch.tensor([0, 2, 2, 1, 0])
    cols = slice(6 * rank, 6 * rank + 6)
    out = {}
    for name, fn, args in (
        ("poly_norm", lambda *a, **k: poly_norm(*a, **k), (x, w, b)),
        ("grouped_gated", lambda x, up, w, b, **k: grouped_gated_poly_norm(x, up, w, b, experts, **k), (x, up, we, be)),
    ):
        full = [a.clone().requires_grad_() for a in args]
        y = fn(*full, implementation="eager")
        y.backward(gy)
        local = [a[:, cols].clone().requires_grad_() if a.dim() == 2 and a.shape[-1] == 12 else a.clone()
                 .requires_grad_() for a in args]
        y_local = fn(*local, implementation="eager", statistics_group=group)
        y_local.backward(gy[:, cols])
        diffs = [(y_local - y[:, cols]).abs().max().item()]
        for a_full, a_local in zip(full, local):
            ref = a_full.grad[:, cols] if a_local.shape != a_full.shape else a_full.grad
            diffs.append((a_local.grad - ref).abs().max().item())
        out[name] = max(diffs)
    # create_graph=True: the same first derivatives; a second one is refused with the op's message.
    xs, ws = x[:, cols].clone().requires_grad_(), w.clone().requires_grad_()
    y = poly_norm(xs, ws, b, implementation="eager", statistics_group=group)
    plain = torch.autograd.grad(y, (xs, ws), gy[:, cols], retain_graph=True)
    graphed = torch.autograd.grad(y, (xs, ws), gy[:, cols], create_graph=True)
    out["create_graph"] = max((p - q).abs().max().item() for p, q in zip(plain, graphed))
    try:
        (graphed[0].square().sum() + graphed[1].sum()).backward()
        out["double_backward"] = "no error"
    except RuntimeError as exc:
        out["double_backward"] = str(exc)
    return out


def _worker(rank: int, port: int, path: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        from torch.distributed.device_mesh import init_device_mesh

        # The trainer's (data, tensor) mesh, here with one data-parallel replica.
        mesh_2d = init_device_mesh("cpu", (1, 2), mesh_dim_names=("dp", "tp"))
        mesh = mesh_2d["tp"]
        sharded = [_run(*case, mesh) for case in CASES]
        results = {}
        for i in range(rank, len(CASES), 2):  # each rank runs half of the unsharded models
            single = _run(*CASES[i])
            results[_case_name(*CASES[i])] = {k: _max_diff(sharded[i][k], single[k]) for k in single}
        # FSDP2 over the data dimension on top: the same numbers as TP alone (MoE PolyReLU's
        # per-expert coefficients: FSDP2's parameter swaps meet the gradient-summing hooks).
        i = CASES.index(("polyrelu", True, True))
        with_fsdp = _run(*CASES[i], mesh, fsdp_mesh=mesh_2d["dp"])
        results["fsdp"] = {k: _max_diff(with_fsdp[k], sharded[i][k]) for k in with_fsdp}
        results["shard_local"] = _shard_local_difference(mesh)
        results["ops"] = _op_checks(mesh)
        torch.save(results, f"{path}.{rank}")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_ranks() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "results.pt")
        mp.spawn(_worker, args=(_free_port(), path), nprocs=2, join=True)
        return {**torch.load(f"{path}.1"), **torch.load(f"{path}.0")}


def test_two_ranks():
    # One test, not one per case: pytest-xdist would spawn the 2 processes again on each worker.
    ranks = _run_ranks()
    cases = [_case_name(*case) for case in CASES]
    failed = {name: ranks[name] for name in cases if max(ranks[name].values()) >= TOL}
    assert not failed, f"TP=2 differs from TP=1: {failed}"
    assert max(ranks["fsdp"].values()) < TOL, f"TP=2 with FSDP2 differs from TP=2: {ranks['fsdp']}"
    # The official code's PolyNorm at TP = 2 (RMS over each rank's shard): other logits.
    assert ranks["shard_local"] > 1e-3, ranks["shard_local"]
    # The sharded op on float64 halves of rows against the whole-row op: float64 rounding.
    ops = ranks["ops"]
    assert ops["poly_norm"] < 1e-12 and ops["grouped_gated"] < 1e-12, ops
    assert ops["create_graph"] == 0, ops
    assert ops["double_backward"] == DOUBLE_BACKWARD_ERROR, ops


# ---- single-process checks ----

def test_refusals():
    dense = _config("polynorm", False)
    with pytest.raises(UsageError, match="single process"):
        check_tensor_parallel(dense, 2, world_size=1)
    with pytest.raises(UsageError, match="world size 4"):
        check_tensor_parallel(dense, 3, world_size=4)
    with pytest.raises(UsageError, match="model.n_kv_heads=2"):
        check_tensor_parallel(dense, 4, world_size=4)
    with pytest.raises(UsageError, match="model.n_heads=6"):
        check_tensor_parallel(ModelConfig(vocab_size=64, n_layers=1, d_model=48, n_heads=6, max_seq_len=16), 4, 4)
    with pytest.raises(UsageError, match="MLP width 60"):
        check_tensor_parallel(ModelConfig(vocab_size=64, n_layers=1, d_model=32, n_heads=8, max_seq_len=16,
                                          ffn_hidden=60, ffn_multiple_of=4), 8, 8)
    for activation, kwargs, reason in (("af_kan", {}, "afkan"), ("mu_layer", {}, "'mu'"),
                                       ("polycom", {"base": "rmsnorm"}, "rmsnorm")):
        cfg = ModelConfig(vocab_size=64, n_layers=1, d_model=32, n_heads=4, max_seq_len=16, activation=activation,
                          activation_kwargs=kwargs)
        with pytest.raises(UsageError, match=reason) as info:
            check_tensor_parallel(cfg, 2, world_size=2)
        assert "\n" not in str(info.value) and "train.tensor_parallel" in str(info.value)
    check_tensor_parallel(dense, 2, world_size=4)  # 2 x 2 mesh: fine
    for activation in ("polyrelu", "polynorm", "gated_polynorm"):  # per-expert coefficients: fine
        check_tensor_parallel(_config(activation, True, per_expert=True), 2, world_size=2)


@pytest.mark.parametrize("name", [n for n in list_activations() if activation_info(n).mlp_kind in ("plain", "gated")])
def test_elementwise_rule(name):
    # An activation declared elementwise computes the same on each half of a row as on the whole
    # row; one that is not is refused (the PolyNorm family has its statistics all_reduce instead).
    act = activation_info(name).build()
    rule = tensor_parallel_rule(act)
    x, up = torch.randn(3, 16, dtype=torch.float64), torch.randn(3, 16, dtype=torch.float64)
    act = act.double()
    args = (x, up) if activation_info(name).gated else (x,)
    whole = act(*args)
    halves = torch.cat([act(*(a[:, :8] for a in args)), act(*(a[:, 8:] for a in args))], dim=-1)
    if rule == "elementwise":
        torch.testing.assert_close(halves, whole, rtol=0, atol=1e-12)
    else:
        assert rule == "statistics" and (halves - whole).abs().max() > 1e-3


def test_a_rule_is_declared_by_the_class_itself_not_inherited():
    from polycom.activations import PolyReLU

    class Rescaled(PolyReLU):  # changes the forward: PolyReLU's rule may no longer hold
        def forward(self, x):
            return super().forward(x) / x.norm(dim=-1, keepdim=True)

    class Declared(Rescaled):
        tensor_parallel_rule = "elementwise"  # the author's promise (false here, but it is theirs to make)

    assert tensor_parallel_rule(PolyReLU()) == "elementwise"
    assert "Rescaled declares no tensor_parallel_rule" in tensor_parallel_rule(Rescaled())
    assert tensor_parallel_rule(Declared()) == "elementwise"
    assert tensor_parallel_rule(torch.nn.Tanh()) == "Tanh declares no tensor_parallel_rule (not known to be elementwise)"
