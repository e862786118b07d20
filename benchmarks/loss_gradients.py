"""Which loss term steers a SMART update? The gradient norm of each weighted term on the encoder, for one batch.

SMART's loss is ``w_cls * L_cls + w_patch * L_patch + w_rec * L_rec`` and the trainer clips the whole update to one
norm (``clip_grad``, 0.3), so a term whose gradient is much larger than the others' decides the step's direction.
This builds the ``distillation_sanity`` toy's pretraining workflow (the bundle's own trainer, networks and loss;
``--set`` adds overrides, e.g. ``network_def#head_use_bn=true``), loads a run's ``checkpoint.pt`` (student,
teacher, centres) or keeps the random initialisation, takes one batch through the forward half of the trainer's own
step (``SMARTTrainer.forward_losses``: teacher pass, masks, student pass, loss), and prints the norm of the encoder's
gradient of each weighted term, from the weights the loss was built with.

    python -m benchmarks.loss_gradients --set network_def#head_use_bn=true                # at initialisation
    python -m benchmarks.loss_gradients --set network_def#head_use_bn=true \\
        --checkpoint /tmp/distillation_sanity/runs/smart_bn/models/checkpoint.pt          # after a run
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks import distillation_sanity as ds  # the toy and its bundle workflow
from benchmarks import label_efficiency as le  # --set parsing

TERMS = (("cls", "w_cls"), ("patch", "w_patch"), ("rec", "w_rec"))


def gradient_norms(trainer, batch: dict, teacher_temp: float = 0.04) -> dict[str, dict[str, float]]:
    """``{term: {"weighted_loss", "grad_norm"}}`` of one batch: the encoder's gradient of each weighted loss term."""
    import torch

    from smart_nets.engines import unwrap

    views, noise = trainer.prepare_batch(batch, torch.device("cpu"), False)
    student, loss_fn = unwrap(trainer.network), trainer.loss_function
    student.train()
    trainer.teacher.eval()
    _, _, losses = trainer.forward_losses(views, noise, teacher_temp, teacher_temp)
    params = [p for n, p in student.named_parameters() if n.startswith("encoder.") and p.requires_grad]
    out = {}
    for term, weight_name in TERMS:
        weighted = getattr(loss_fn, weight_name) * losses[term]
        grads = torch.autograd.grad(weighted, params, retain_graph=True, allow_unused=True)
        norm = torch.nn.utils.get_total_norm([g for g in grads if g is not None])
        out[term] = {"weighted_loss": float(weighted), "grad_norm": float(norm)}
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a run's checkpoint.pt (network, teacher, loss); default: random init")
    parser.add_argument("--set", nargs="*", default=[], metavar="ID=JSON", help="bundle overrides")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="the --quick toy of distillation_sanity (16 volumes)")
    parser.add_argument("--work", default="/tmp/distillation_sanity", help="where the toy is (made if missing)")
    args = parser.parse_args(argv)
    import torch

    s = dict(ds.QUICK if args.quick else ds.FULL, seed=args.seed, overrides={})
    data = ds.toy_data(Path(args.work), s)
    wf, _ = ds._workflow(s, data, Path(args.work) / "loss_gradients", le.parse_sets(parser, args.set), 1)
    trainer = wf.parser.get_parsed_content("train#trainer")
    if args.checkpoint:
        if not Path(args.checkpoint).is_file():
            raise SystemExit(f"--checkpoint {args.checkpoint}: no such file")
        state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        missing = [k for k in ("network", "teacher", "loss") if k not in state]
        if missing:
            raise SystemExit(f"--checkpoint {args.checkpoint} lacks {missing}: not a pretraining checkpoint.pt")
        trainer.network.load_state_dict(state["network"])
        trainer.teacher.load_state_dict(state["teacher"])
        trainer.loss_function.load_state_dict(state["loss"])
    torch.manual_seed(args.seed)
    result = gradient_norms(trainer, next(iter(wf.parser.get_parsed_content("train#dataloader"))))
    for term, r in result.items():
        print(f"{term:>5}: weighted loss {r['weighted_loss']:.4f}, encoder gradient norm {r['grad_norm']:.4g}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
