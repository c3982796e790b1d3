"""torch.export of polycom's models: ModelOutput is a registered pytree, and the exported program of a
debug-size dense and MoE model gives the eager model's outputs, on inputs other than the traced ones
(the MoE's routing is data, not baked into the graph), and after a save / load of the program. The
dense model's activation runs polycom's default implementation (the one a user exports; on CPU a
compiled function that export traces through), the MoE's the eager one (a third of the export time)."""

import pytest
import torch
from torch.utils import _pytree as pytree

from polycom.models import PRESETS, ModelConfig, build_model
from polycom.models.transformer import ModelOutput

MOE = {"num_experts": 4, "top_k": 2, "coefficients": "per_expert", "shared_expert": True}


def test_model_output_flattens_to_its_tensors_and_back():
    a, b = torch.randn(2, 3), torch.tensor(0.5)
    for out in (ModelOutput(a, None, None, b), ModelOutput(a, b + 1, b, b)):
        leaves, spec = pytree.tree_flatten(out)
        assert [x for x in (out.logits, out.loss, out.ce_loss, out.aux_loss) if x is not None] == leaves
        back = pytree.tree_unflatten(leaves, spec)
        assert isinstance(back, ModelOutput) and back == out


def _model(moe):
    torch.manual_seed(0)
    kwargs = {} if moe is None else {"implementation": "eager"}
    cfg = ModelConfig.from_dict({**PRESETS["debug"], "n_layers": 1, "activation": "polynorm", "moe": moe,
                                 "activation_kwargs": kwargs})
    return build_model(cfg).eval()


# The dense model with targets (all four fields) and saved / loaded; the MoE without (loss fields None).
@pytest.mark.parametrize("moe, with_targets", [(None, True), (MOE, False)], ids=["dense", "moe"])
def test_exported_program_equals_eager(moe, with_targets, tmp_path):
    model = _model(moe)
    traced, ids = torch.randint(0, 256, (2, 2, 16), generator=torch.Generator().manual_seed(1)).unbind(0)
    args = (lambda x: (x, x.roll(-1, 1))) if with_targets else (lambda x: (x,))
    program = torch.export.export(model, args(traced), strict=False)  # torch 2.4 defaults to strict (Dynamo)
    programs = [program]
    if moe is None:  # the saved program names ModelOutput by its serialized_type_name (once: ~3 s)
        torch.export.save(program, tmp_path / "model.pt2")
        programs.append(torch.export.load(tmp_path / "model.pt2"))
    with torch.no_grad():
        want = model(*args(ids))
        for got in (p.module()(*args(ids)) for p in programs):
            assert isinstance(got, ModelOutput)
            for field in ("logits", "loss", "ce_loss", "aux_loss"):
                if getattr(want, field) is None:
                    assert getattr(got, field) is None, field
                    continue
                # The same fp32 ops; the exported graph may fuse or reorder a few (measured <= 3e-7 on logits)
                torch.testing.assert_close(getattr(got, field), getattr(want, field), rtol=0, atol=1e-5, msg=field)
