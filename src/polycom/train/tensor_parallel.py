"""Tensor parallelism: the torchtitan plan on PyTorch's own engine, with PolyNorm statistics over the group.

``apply_tensor_parallel(model, tp_mesh)`` shards every block over the 1-D mesh ``tp_mesh`` (the
tensor dimension of a (data, tensor) mesh) with ``torch.distributed.tensor.parallel``:

- attention: ``q_proj``, ``k_proj``, ``v_proj`` column-wise (each rank holds whole heads),
  ``o_proj`` row-wise (one all_reduce of the output);
- dense MLP: ``up_proj`` and ``gate_proj`` column-wise, ``down_proj`` row-wise;
- MoE: each expert's up/gate column-wise and down row-wise (the stacked (E, out, in) weights
  become DTensors sharded on the hidden dimension, and the experts run on the local shards);
  the router runs replicated; the routed and shared-expert outputs are summed by one all_reduce;
- embeddings, norms, the LM head, the router and the activations' coefficients are replicated
  DTensors on the same mesh (every parameter is a DTensor there, so FSDP2 puts them all on one
  2-D mesh and foreach kernels, gradient norms and clipping see one mesh); their modules compute
  on the local tensor. The QK-norm weights, applied to each rank's own heads, get their
  gradient summed over the group.

The activation sees only the local columns of each token's hidden vector:

- PolyNorm and gated PolyNorm (and their grouped forms) normalise over the whole vector, so
  their modules get ``statistics_group``, the mesh's process group, and their op sums the
  per-row statistics over it: one all_reduce of r floats per row in the forward and of r + 1
  in the backward (``ops/sharded_poly_norm.py``). Their coefficient gradients then come out whole.
  Per-expert ones (``models.moe.ExpertActivations``, one grouped op on the experts' stacked
  coefficients) get it on every expert module, and the local-tensor swap of the experts'
  coefficients runs in the ExpertActivations' forward, which reads them (the experts' own does not run).
- An elementwise activation computes the same on a shard; if it has coefficients (PolyReLU,
  Hermite, ...), their gradient from one shard is partial, so the module reads them through
  an identity whose backward sums the gradient over the group (DTensor ``from_local`` /
  ``to_local``; one all_reduce per coefficient tensor).
- Anything else (a PolyCom with an ``rmsnorm`` base other than PolyNorm, an unregistered
  module, the AF-KAN and Mu-layer MLP kinds) is refused by ``check_tensor_parallel`` with one
  line naming the key.

The model's own code stays rank-free; everything here acts through parallel styles, module
hooks and attributes. Only plain single-device models are accepted: apply tensor parallelism
before FSDP2 (``fully_shard`` on the data dimension), as torchtitan does.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ..errors import UsageError

__all__ = ["apply_tensor_parallel", "check_tensor_parallel", "tensor_parallel_rule", "split_dims",
           "narrow_to_one_rank", "KEY"]

KEY = "train.tensor_parallel"

# The projections the plan splits, by the name of their weight in a block (attention, dense MLP,
# MoE stacked experts, shared expert); every other parameter is replicated. Column-wise: the
# output features (dim -2 of an (..., out, in) weight); row-wise: the input features (dim -1).
COLUMN_WISE = ("q_proj", "k_proj", "v_proj", "up_proj", "gate_proj")
ROW_WISE = ("o_proj", "down_proj")

# torch's own elementwise modules, which cannot declare a rule (every polycom activation does).
_TORCH_ELEMENTWISE = (nn.ReLU, nn.GELU, nn.SiLU)


def tensor_parallel_rule(act: nn.Module) -> str:
    """How ``act`` runs on a column shard: 'statistics' (PolyNorm family), 'elementwise', or a refusal reason.

    An activation class declares its own ``tensor_parallel_rule`` (an attribute or a property of
    the instance); it is read from the class itself, not inherited: a subclass that changes the
    forward must state again that its rule holds. 'statistics' promises that the module sums its
    row statistics over ``statistics_group`` when that attribute is set (PolyNorm's op does)."""
    if type(act) in _TORCH_ELEMENTWISE:
        return "elementwise"
    if "tensor_parallel_rule" not in vars(type(act)):
        return f"{type(act).__name__} declares no tensor_parallel_rule (not known to be elementwise)"
    return act.tensor_parallel_rule


def check_tensor_parallel(model_config, degree: int, world_size: int | None = None) -> None:
    """Refuse a tensor-parallel ``degree`` this model or launch cannot run, one line naming the key.

    ``world_size``: the processes of the job (default: the initialised process group's, 1 without one).
    """
    from ..models.mlp import mlp_kind
    from ..registry import activation_info

    if not isinstance(degree, int) or isinstance(degree, bool) or degree < 1:
        raise UsageError(f"{KEY} must be a positive integer, got {degree!r}")
    if degree == 1:
        return
    if world_size is None:
        world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if world_size == 1:
        raise UsageError(f"{KEY}={degree} needs {degree} processes, but this is a single process; launch with "
                         f"torchrun --nproc-per-node {degree} (or set {KEY}=1)")
    if world_size % degree:
        raise UsageError(f"{KEY}={degree} does not divide the world size {world_size}: the (data, tensor) mesh "
                         f"needs world size = data x {degree}")
    c = model_config
    for key, value in (("model.n_heads", c.n_heads), ("model.n_kv_heads", c.kv_heads)):
        if value % degree:
            raise UsageError(f"{KEY}={degree} does not divide {key}={value}: each rank must hold whole heads")
    width_key, width = ("model.moe.expert_hidden", c.expert_hidden) if c.moe else ("model.ffn_hidden", c.mlp_hidden)
    if width % degree:
        raise UsageError(f"{KEY}={degree} does not divide the MLP width {width} ({width_key}): "
                         "the column shards must be equal")
    info = activation_info(c.activation)
    kind = mlp_kind(info.mlp_kind)
    if not kind.projections:
        raise UsageError(f"{KEY}={degree}: MLP kind {kind.name!r} (model.activation={c.activation!r}) has no "
                         f"tensor-parallel plan; use {KEY}=1")
    rule = tensor_parallel_rule(info.build(**(c.activation_kwargs or {})))
    if rule not in ("statistics", "elementwise"):
        raise UsageError(f"{KEY}={degree}: model.activation={c.activation!r} cannot run on a column shard ({rule}); "
                         f"use {KEY}=1")


def apply_tensor_parallel(model: nn.Module, tp_mesh) -> nn.Module:
    """Shard ``model`` (a ``polycom.models.Transformer``) over the 1-D ``tp_mesh``; returns it, modified in place."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    from ..models.moe import MoE

    if tp_mesh.ndim != 1:
        raise UsageError(f"{KEY}: apply_tensor_parallel takes the 1-D tensor dimension of the mesh "
                         f"(mesh['tp']), got a {tp_mesh.ndim}-D mesh")
    degree = tp_mesh.size()
    check_tensor_parallel(model.config, degree, dist.get_world_size())
    if degree == 1:
        return model
    for block in model.layers:
        parts = ("attn",) if isinstance(block.mlp, MoE) else ("attn", "mlp")  # the MoE has its own plan
        plan = {f"{part}.{name}": ColwiseParallel() if name in COLUMN_WISE else RowwiseParallel()
                for part in parts for name, _ in getattr(block, part).named_children()
                if name in COLUMN_WISE + ROW_WISE}
        if isinstance(block.mlp, MoE):
            _parallelize_moe(block.mlp, tp_mesh)
        else:
            _shard_activation(block.mlp.act, tp_mesh)
        parallelize_module(block, tp_mesh, plan)
        for norm in (block.attn.q_norm, block.attn.k_norm):  # QK-norm: replicated weights on local heads
            if norm is not None:
                _replicate_parameters(norm, tp_mesh, used_on_shard=True)
        _local_head_counts(block.attn, degree)
    _replicate_parameters(model, tp_mesh, used_on_shard=False)  # embeddings, norms, LM head, router, ...
    return model


def _local_head_counts(attn: nn.Module, degree: int) -> None:
    """The attention module reshapes by its head counts: make them those of one rank."""
    attn.n_heads //= degree
    attn.n_kv_heads //= degree


def split_dims(model: nn.Module) -> dict[str, int]:
    """{parameter name: the dimension the plan splits it on (-2 column-wise, -1 row-wise)} for the
    parameters of an unsharded ``model`` that tensor parallelism shards; the rest are replicated."""
    dims = {}
    for name, p in model.named_parameters():
        parts = name.split(".")
        projection = parts[-2] if parts[-1] in ("weight", "bias") else parts[-1]
        if parts[0] != "layers" or projection not in COLUMN_WISE + ROW_WISE:
            continue
        if parts[-1] == "bias" and projection in ROW_WISE:
            continue  # a row-parallel bias is added once, to the summed output: replicated
        dims[name] = -1 if projection in ROW_WISE or parts[-1] == "bias" else -2
    return dims


def narrow_to_one_rank(model: nn.Module, degree: int) -> nn.Module:
    """One rank's shapes, without a mesh, for a model on the ``meta`` device: every parameter of
    ``split_dims`` 1/``degree`` as wide on its split dimension, the attention's head counts
    those of one rank. A forward then allocates what one rank's does (the memory plan traces it);
    the collectives, which change no shape, are left out. Modified in place and returned."""
    dims = split_dims(model)
    for name, dim in dims.items():
        owner, _, leaf = name.rpartition(".")
        module = model.get_submodule(owner)
        p = module._parameters[leaf]
        local = p.narrow(dim, 0, p.shape[dim] // degree)
        module._parameters[leaf] = nn.Parameter(torch.empty_like(local), requires_grad=p.requires_grad)
    for block in model.layers:
        _local_head_counts(block.attn, degree)
    return model


# ---- gradients of replicated tensors used on a shard ----

def _sum_gradient(t: torch.Tensor, mesh) -> torch.Tensor:
    """``t`` in the forward; in the backward, its gradient summed over ``mesh`` (each rank's is partial)."""
    from torch.distributed.tensor import DTensor, Partial, Replicate

    return DTensor.from_local(t, mesh, [Replicate()], run_check=False).to_local(grad_placements=[Partial()])


def _reduce_output(t: torch.Tensor, mesh) -> torch.Tensor:
    """The sum of every rank's partial ``t`` (one all_reduce); its gradient passes unchanged to each rank."""
    from torch.distributed.tensor import DTensor, Partial, Replicate

    return DTensor.from_local(t, mesh, [Partial()], run_check=False).redistribute(mesh, [Replicate()]).to_local()


def _swap_parameters_in_forward(module: nn.Module, names, view) -> None:
    """During each forward of ``module``, parameter ``name`` reads as ``view(parameter)`` (same entry afterwards).

    A dotted ``name`` ("experts.0.weight") is a submodule's parameter, for a module whose forward
    reads its submodules' parameters itself. The state dict, the optimizer and FSDP see the
    parameters themselves; only the forward's graph goes through the view, whose backward
    delivers the gradient to the parameter."""
    def swap(mod, args):
        saved = mod._tensor_parallel_saved = []
        for n in names:
            prefix, _, leaf = n.rpartition(".")
            owner = mod.get_submodule(prefix)  # "" is mod itself
            saved.append((owner, leaf, owner._parameters[leaf]))
            owner._parameters[leaf] = view(owner._parameters[leaf])

    def restore(mod, args, output):
        for owner, leaf, p in mod.__dict__.pop("_tensor_parallel_saved", ()):
            owner._parameters[leaf] = p

    module.register_forward_pre_hook(swap)
    module.register_forward_hook(restore, always_call=True)


def _replicate_parameters(root: nn.Module, mesh, used_on_shard: bool, read_by_root: bool = False) -> None:
    """Every plain parameter under ``root`` becomes a replicated DTensor on ``mesh``; forwards read its local tensor.

    So every parameter of the model lives on the tensor mesh (FSDP2 then puts them all on the
    same 2-D mesh, and foreach kernels over them see one mesh). ``used_on_shard``: the module runs
    on one rank's heads or columns, so each rank's gradient is partial and is summed over ``mesh``.
    ``read_by_root``: ``root``'s forward reads its submodules' parameters (their own forward does
    not run), so the local tensors are swapped in there."""
    from torch.distributed.tensor import DTensor, Replicate

    if used_on_shard:
        def view(p):
            return _sum_gradient(p.to_local(), mesh)
    else:
        def view(p):
            return p.to_local()
    converted = {}  # a tied parameter becomes one DTensor
    read_in_root = []
    for prefix, module in root.named_modules():
        names = [n for n, p in module.named_parameters(recurse=False) if not isinstance(p, DTensor)]
        for n in names:
            p = module._parameters[n]
            if id(p) not in converted:
                local = DTensor.from_local(p.data, mesh, [Replicate()], run_check=False)
                converted[id(p)] = nn.Parameter(local, requires_grad=p.requires_grad)
            module._parameters[n] = converted[id(p)]
        if read_by_root:
            read_in_root += [f"{prefix}.{n}" if prefix else n for n in names]
        elif names:
            _swap_parameters_in_forward(module, names, view)
    if read_in_root:
        _swap_parameters_in_forward(root, read_in_root, view)


def _shard_activation(act: nn.Module, mesh) -> None:
    """Make ``act`` right on the local columns (module docstring)."""
    from ..models.moe import ExpertActivations

    if tensor_parallel_rule(act) == "statistics":
        act.statistics_group = mesh.get_group()  # its coefficient gradients come out whole
    elif isinstance(act, ExpertActivations) and act.grouped:
        # Per-expert PolyNorm: ExpertActivations' forward stacks the experts' coefficients for
        # one grouped op, which reads the group from the first expert. As for one PolyNorm, the
        # op's statistics all_reduce makes the coefficient gradients whole: no gradient sum.
        for expert in act.experts:
            expert.statistics_group = mesh.get_group()
        _replicate_parameters(act, mesh, used_on_shard=False, read_by_root=True)
    else:
        _replicate_parameters(act, mesh, used_on_shard=True)


# ---- MoE ----

def _parallelize_moe(moe: nn.Module, mesh) -> None:
    """Experts' hidden dimension over ``mesh``; router replicated; one all_reduce of the layer's output.

    Gradients: the routed rows' input gradient is partial on each rank (each holds some hidden
    columns), as is the routing weights' (each rank's output is a partial sum), so both are summed
    over the group; the router's other inputs (the auxiliary losses) and the shared expert (whose
    column-parallel projections reduce their own input gradient) read the unreduced input."""
    from torch.distributed.tensor import Shard, distribute_tensor
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module
    from torch.distributed.tensor.placement_types import Partial

    if moe.experts is not None:
        raise UsageError(f"{KEY}: MoE experts of an MLP kind with its own layer have no tensor-parallel plan")
    names = [n for n in ("up_proj", "gate_proj") if getattr(moe, n, None) is not None]
    for name in names + ["down_proj"]:
        dim = 2 if name == "down_proj" else 1  # (E, d, h) row-wise, (E, h, d) column-wise
        p = getattr(moe, name)
        moe.register_parameter(name, nn.Parameter(distribute_tensor(p.data, mesh, [Shard(dim)])))
    _swap_parameters_in_forward(moe, names + ["down_proj"], lambda p: p.to_local())
    _shard_activation(moe.act, mesh)

    def stash_input(mod, args):
        mod._tensor_parallel_input = args[0]
        return (_sum_gradient(args[0], mesh), *args[1:])

    def reduce_output(mod, args, output):
        mod.__dict__.pop("_tensor_parallel_input", None)
        out, aux = output
        return _reduce_output(out, mesh), aux

    def unreduced_input(sub):
        def hook(mod, args):
            x = moe._tensor_parallel_input
            return (x.reshape(-1, x.shape[-1]), *args[1:])
        return hook

    def sum_routing_weight_gradient(mod, args, output):
        scores, probs, top_w, top_idx = output
        return scores, probs, _sum_gradient(top_w, mesh), top_idx

    moe.register_forward_pre_hook(stash_input)
    moe.register_forward_hook(reduce_output, always_call=True)
    moe.router.register_forward_pre_hook(unreduced_input(moe.router))
    moe.router.register_forward_hook(sum_routing_weight_gradient)
    if moe.shared_expert is not None:
        shared = moe.shared_expert
        plan = {f"{n}": ColwiseParallel() for n in ("up_proj", "gate_proj") if getattr(shared, n, None) is not None}
        plan["down_proj"] = RowwiseParallel(output_layouts=Partial())  # summed with the routed output
        parallelize_module(shared, mesh, plan)
        _shard_activation(shared.act, mesh)
        shared.register_forward_pre_hook(unreduced_input(shared))
