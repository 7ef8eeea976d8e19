"""The script test_distributed launches on 2 CPU processes (gloo), the way a user would:

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_child.py VOCAB DATA OUT

Three runs of a tiny two-task model, every rank writing what it ends with under OUT for the parent to check:
- `plain`: dropout 0, gradient accumulation 2; evaluates and saves as it goes; then evaluates and predicts
  the dev set (13 examples: the ranks decode 7 and 6); counts which rank wrote checkpoint files; then tries
  to save NaN weights, which rank 0 refuses.
- `solo`: a lone `mtl.Trainer` (one task), accumulating 2 micro-batches.
- `whole` and `resumed`: dropout 0.1; `resumed` stops at step 6, and a trainer with another random init
  continues from its checkpoint; both must end with the same weights.
- `balanced`: the two tasks under uncertainty weighting, whose learnt log-variances are used after the
  forward, outside DDP's sight.
- `pooled`: one task whose heads use every parameter (the intent head reads the pooler), accumulating 2
  micro-batches: no parameter is unused, and DDP must not search for unused ones.
- `student`: the two tasks again, the joint one distilled from `plain`'s final model (each rank computes the
  teacher's targets into one cache folder).
- `adapters`: the two tasks, each with its own LoRA adapter over the frozen encoder.
Each run's DDP options (static_graph, find_unused_parameters) go in rank 0's report.
"""
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import mtl  # noqa: E402
from conftest import tiny_bert  # noqa: E402
from mtl import distributed  # noqa: E402
from mtl.components.savers import checkpoint  # noqa: E402
from mtl.distill import Teacher, distill_into  # noqa: E402


def build(vocab: Path, data: Path, dropout: float = 0.0, init_seed: int = 0, adapters: bool = False,
          **options) -> "mtl.MultiHeadTrainer":
    """Task `joint` (intent + softmax slot heads, global batch 5: 21 examples end on a batch of 1, so one rank
    runs a stand-in) and task `tagger` (a CRF tagger, batch 7); dev batches of 4. `adapters`: each task
    trains its own LoRA adapter over the frozen encoder."""
    torch.manual_seed(init_seed)
    backbone = tiny_bert(hidden_dropout_prob=dropout)
    joint_reader = mtl.reader.IntentSlotReader(vocab, 32, seed=3).load_data(data / "train", batch_size=5)
    tag_reader = mtl.reader.IntentSlotReader(vocab, 32, seed=4).load_data(data / "train", batch_size=7)
    names = joint_reader.label_names
    lora = mtl.backbone.LoRA(r=2, dropout=0.0) if adapters else None
    joint = mtl.Trainer("joint", reader=joint_reader, dev_reader=joint_reader.eval_reader(data / "dev", batch_size=4),
                        head=mtl.head.intent_slot_heads(joint_reader, 32, dropout, False), adapter=lora)
    tagger = mtl.Trainer("tagger", reader=tag_reader, mix_ratio=0.5,
                         dev_reader=tag_reader.eval_reader(data / "dev", batch_size=4),
                         head=mtl.head.SequenceLabel(len(names["slot_ids"]), 32, dropout, "slot_ids", use_crf=True),
                         adapter=lora)
    options = {"lr": 1e-3, "num_epochs": 2, "precision": "fp32", "seed": 7, "sampling_reference": "joint",
               "device": "cpu", **options}
    return mtl.MultiHeadTrainer([joint, tagger], backbone=backbone, **options)


def solo_trainer(vocab: Path, data: Path, sentence_vector: str = "cls", **options) -> "mtl.Trainer":
    """One task alone (PALM's single-task form): intent + slots over batches of 6, accumulating 2 micro-batches.
    The intent head reads the [CLS] vector (the pooler gets no gradient) or the pooled output."""
    torch.manual_seed(0)
    reader = mtl.reader.IntentSlotReader(vocab, 32, seed=2).load_data(data / "train", batch_size=6)
    options = {"lr": 1e-3, "num_epochs": 1, "precision": "fp32", "device": "cpu", "grad_accum_steps": 2, **options}
    heads = mtl.head.intent_slot_heads(reader, 32, 0.0, False, sentence_vector=sentence_vector)
    return mtl.Trainer("solo", reader=reader, head=heads, backbone=tiny_bert(), **options)


def ddp_options(trainer: "mtl.MultiHeadTrainer | mtl.Trainer") -> dict[str, bool]:
    ddp = trainer.solo.ddp if isinstance(trainer, mtl.Trainer) else trainer.ddp
    return {"static_graph": ddp.static_graph, "find_unused_parameters": ddp.find_unused_parameters}


def tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights (a balancer's extra state is not a tensor)."""
    return {key: value for key, value in model.state_dict().items() if isinstance(value, torch.Tensor)}


def main(vocab: Path, data: Path, out: Path) -> None:
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    writes = []
    real_write = checkpoint.write_checkpoint

    def counted(folder, *args, **kwargs):
        writes.append(Path(folder).name)
        return real_write(folder, *args, **kwargs)
    checkpoint.write_checkpoint = counted

    plain = build(vocab, data, grad_accum_steps=2)
    plain.set_saver(out / "plain", save_steps=3)
    result = plain.train(print_steps=2, eval_steps=4)
    report = {"world": distributed.world_size(), "steps": result["steps"], "writes": list(writes),
              "metrics": plain.evaluate(), "records": plain.predict("joint", plain.tasks[0].dev_reader),
              "best_score": result["best_score"]}
    save_file(dict(plain.model.state_dict()), str(out / f"plain-rank{rank}.safetensors"))
    with torch.no_grad():  # rank 0 refuses to save NaN weights: every rank must hear of it, none wait forever
        plain.model.heads["joint"]["intent"].classifier.bias[0] = float("nan")
    try:
        plain.save(out / "refused" / "model")
    except mtl.MtlError as error:
        report["refused"] = str(error)

    solo = solo_trainer(vocab, data)  # a lone Trainer runs the same loop
    solo.train(print_steps=0)
    save_file(dict(solo.solo.model.state_dict()), str(out / f"solo-rank{rank}.safetensors"))

    balanced = build(vocab, data, balancer=mtl.balancer.UncertaintyWeighting())
    balanced.train(print_steps=0)
    save_file(tensors(balanced.model), str(out / f"balanced-rank{rank}.safetensors"))
    pooled = solo_trainer(vocab, data, sentence_vector="pooled_output")
    pooled.train(print_steps=0)
    save_file(dict(pooled.solo.model.state_dict()), str(out / f"pooled-rank{rank}.safetensors"))
    student = build(vocab, data)  # the plain run's final model teaches the joint task; every rank labels its data
    distill_into(student, {"joint": Teacher(out / "plain" / "final", task="joint", cache_dir=out / "targets",
                                            precision="fp32")})
    student.train(print_steps=0)
    save_file(dict(student.model.state_dict()), str(out / f"student-rank{rank}.safetensors"))

    adapted = build(vocab, data, adapters=True, lr=1e-2)
    adapted.train(print_steps=0)
    save_file(dict(adapted.model.state_dict()), str(out / f"adapters-rank{rank}.safetensors"))
    report["ddp"] = {name: ddp_options(trainer) for name, trainer in
                     (("plain", plain), ("solo", solo), ("balanced", balanced), ("pooled", pooled),
                      ("adapters", adapted))}

    whole = build(vocab, data, dropout=0.1)
    whole.set_saver(out / "whole", save_steps=3)
    whole.train(print_steps=0)
    stopped = build(vocab, data, dropout=0.1)
    stopped.set_saver(out / "resumed", save_steps=3)
    stopped.train(print_steps=0, max_steps=6)
    resumed = build(vocab, data, dropout=0.1, init_seed=5)
    resumed.set_saver(out / "resumed", save_steps=3)
    resumed.train(print_steps=0, resume_from=checkpoint.latest_checkpoint(out / "resumed"))
    save_file(dict(whole.model.state_dict()), str(out / f"whole-rank{rank}.safetensors"))
    save_file(dict(resumed.model.state_dict()), str(out / f"resumed-rank{rank}.safetensors"))
    (out / f"plain-rank{rank}.json").write_text(json.dumps(report), encoding="utf-8")
    distributed.barrier()  # leave together: a rank tearing gloo down while its peer still writes can abort


if __name__ == "__main__":
    main(*(Path(arg) for arg in sys.argv[1:4]))
