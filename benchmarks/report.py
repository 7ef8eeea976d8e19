"""Print the README's and docs/multitask.md's results tables (markdown) from benchmarks/results/*.json: joint
intent + slot filling (atis_joint, snips_joint), the joint ablation (joint_ablation), PALM's two-task form
against the joint form (palm_two_task_vs_joint), the other tasks (conll2003_ner, mrpc, sst2, mrc_with_mlm), the
Chinese tasks over the encoder pretrained here (chinese_tasks), English continued pretraining (tapt_en) and LoRA
adapters against full fine-tuning (adapters, for docs/adapters.md).

    python benchmarks/report.py
"""
import json

from common import RESULTS

KEYS = ("intent.accuracy", "slots.f1", "frame_accuracy")


def row(label: str, mean: dict, std: dict | None) -> str:
    cells = [f"{mean[k]:.2f} ± {std[k]:.2f}" if std else f"{mean[k]:.2f}" for k in KEYS]
    return f"| {label} | " + " | ".join(cells) + " |"


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def cell(result: dict, key: str) -> str:
    return f"{result['metrics'][key]:.2f} ± {result['std'][key]:.2f}"


def task_rows() -> list[str]:
    """One row per task result: what was measured, on which split, and the command that measured it."""
    rows = []
    ner, mrpc, sst2 = load("conll2003_ner"), load("mrpc"), load("sst2")
    if ner:
        rows.append(f"| CoNLL-2003 NER, test | entity F1 {cell(ner, 'f1')} | `{ner['command']}` |")
    if mrpc:
        rows.append(f"| MRPC, dev | accuracy {cell(mrpc, 'dev.accuracy')}, F1 {cell(mrpc, 'dev.f1')} "
                    f"| `{mrpc['command']}` |")
        rows.append(f"| MRPC, test | accuracy {cell(mrpc, 'test.accuracy')}, F1 {cell(mrpc, 'test.f1')} | (same run) |")
    if sst2:
        rows.append(f"| SST-2, dev | accuracy {cell(sst2, 'dev.accuracy')} | `{sst2['command']}` |")
    mrc = load("mrc_with_mlm")
    labels = {"alone": "MRC alone", "mlm05": "MRC + MLM aux 0.5 (training contexts)",
              "mlm10": "MRC + MLM aux 1.0 (training contexts)", "mlm10_eval": "MRC + MLM aux 1.0 (eval contexts)"}
    for config, result in (mrc or {}).get("configs", {}).items():
        if len(result["seeds"]) < 2:  # one seed has no spread to read a difference against
            continue
        delta = result["vs_alone"]["f1"] if result.get("vs_alone") else None
        paired = (f"; F1 vs alone {delta['mean']:+.2f} ± {delta['std']:.2f} (paired, t {delta['paired_t']})"
                  if delta else "")
        rows.append(f"| SQuAD v1.1, eval articles: {labels.get(config, config)} | EM {cell(result, 'exact_match')}, "
                    f"F1 {cell(result, 'f1')} ({len(result['seeds'])} seeds{paired}) | "
                    f"`python benchmarks/mrc_with_mlm.py --seeds 1 2 3 --resume` |")
    return rows


ABLATION_LABELS = {
    "slots_only": "slots-only model",
    "intent_only": "intent-only model (sentence acc: with the slots-only model, as a pipeline)",
    "intent_only_cls": "intent-only model, [CLS] vector (sentence acc: as a pipeline)",
    "sum": "joint, summed loss (intent + slots)",
    "slots_w2": "joint, slot loss x 2", "slots_w3": "joint, slot loss x 3", "slots_w5": "joint, slot loss x 5",
    "uncertainty": "joint, uncertainty weighting (log-variances at lr 0.01)",
    "uncertainty_model_lr": "joint, uncertainty weighting (log-variances at the model's lr 1e-4)",
    "dwa": "joint, DWA", "pcgrad": "joint, PCGrad",
    "no_clip": "joint, summed, no clipping", "clip_5": "joint, summed, clip norm 5",
    "cls_vector": "joint, summed, [CLS] vector for intent", "crf": "joint, summed, CRF slots",
    "cls_w3": "joint, [CLS] vector for intent, slot loss x 3", "cls_crf": "joint, [CLS] vector for intent, CRF slots"}


def ablation_rows() -> list[str]:
    """The joint ablation: one row per config, with how many seeds it has so far."""
    result = load("joint_ablation")
    if not result:
        return []
    rows = ["| ATIS, 5 epochs, dev-selected | seeds | intent acc | slot F1 | sentence acc |", "|---|---|---|---|---|"]
    for name, config in result["configs"].items():
        one = len(config["seeds"]) == 1  # no spread to show
        cells = [("–" if k not in config["metrics"] else f"{config['metrics'][k]:.2f}" if one
                  else f"{config['metrics'][k]:.2f} ± {config['std'][k]:.2f}") for k in KEYS]
        rows.append(f"| {ABLATION_LABELS.get(name, name)} | {len(config['seeds'])} | " + " | ".join(cells) + " |")
    return rows


def two_task_rows() -> list[str]:
    result = load("palm_two_task_vs_joint")
    if not result:
        return []
    rows = ["| ATIS, same number of encoder passes | intent acc | slot F1 | sentence acc |", "|---|---|---|---|"]
    labels = {"joint": "joint form (one batch, both heads)", "two_task": "PALM's two-task form (mix ratio 1:1)"}
    for form, table in result["forms"].items():
        rows.append(row(labels[form], table["metrics"], table["std"]))
    return rows


ZH_LABELS = {"sentiment": "ChnSentiCorp, accuracy", "ner": "MSRA NER, entity F1", "lcqmc": "LCQMC, accuracy"}
ZH_CELLS = ("pretrained.single", "random.single", "pretrained.multi", "random.multi")


def spread(stats: dict, signed: bool = False) -> str:
    return f"{stats['mean']:+.2f} ± {stats['std']:.2f}" if signed else f"{stats['mean']:.2f} ± {stats['std']:.2f}"


def chinese_rows() -> list[str]:
    """Chinese tasks on test: each init alone and multi-task, the paired per-seed differences, ERNIE for scale."""
    result = load("chinese_tasks")
    if not result:
        return []
    rows = [f"| Chinese task, test ({len(result['seeds'])} seeds) | pretrained here, alone | random init, alone "
            "| pretrained, multi-task | random init, multi-task | pretrained − random, alone (paired) "
            "| multi − single, pretrained (paired) | ERNIE 1.0 (published) |", "|---|---|---|---|---|---|---|---|"]
    for task, table in result["tasks"].items():
        if task == "cmrc":
            rows.append(cmrc_row(table, result["published_ernie_1_0_cmrc2018_dev"]))
            continue
        cells = [spread(table[name]) for name in ZH_CELLS]
        cells += [spread(table["pretrained_minus_random"], True), spread(table["multi_minus_single"], True)]
        rows.append(f"| {ZH_LABELS[task]} | " + " | ".join(cells) + f" | {result['published_ernie_1_0'][task]} |")
    return rows


def cmrc_row(table: dict, ernie: dict) -> str:
    """CMRC 2018 (scored on its dev set, trained alone): F1 and exact match per init, the paired F1 gain."""
    alone = [f"F1 {spread(table[f'{init}.single'])}, EM {spread(table[f'{init}.single.exact_match'])}"
             for init in ("pretrained", "random")]
    return (f"| CMRC 2018 (its dev set as test), F1 / EM | {alone[0]} | {alone[1]} | – | – | "
            f"F1 {spread(table['pretrained_minus_random'], True)} | – | F1 {ernie['f1']}, EM {ernie['exact_match']} "
            "(dev, mean of 10 seeds) |")


TAPT_LABELS = {"snips": "SNIPS, slot F1 (slots-only model)", "conll": "CoNLL-2003, entity F1"}


def tapt_rows() -> list[str]:
    """English task-adaptive pretraining: fine-tuned from MiniLM against from MiniLM after MLM on the task's texts."""
    result = load("tapt_en")
    if not result:
        return []
    rows = [f"| task, test ({len(result['seeds'])} seeds) | MiniLM | MiniLM + MLM on the task's texts "
            "| difference (paired) | |", "|---|---|---|---|---|"]
    for task, table in result["tasks"].items():
        verdict = "exceeds seed noise" if table["exceeds_noise"] else "within seed noise"
        rows.append(f"| {TAPT_LABELS.get(task, task)} | {spread(table['plain'])} | {spread(table['tapt'])} "
                    f"| {spread(table['difference'], True)} | {verdict} |")
    return rows


JOINT_KEYS = {"intent.accuracy": "intent acc", "slots.f1": "slot F1", "frame_accuracy": "sentence acc"}
ADAPTER_TASKS = {"atis": ("ATIS", JOINT_KEYS), "snips": ("SNIPS", JOINT_KEYS),
                 "conll": ("CoNLL-2003", {"f1": "entity F1"}), "sst2": ("SST-2", {"sst2.accuracy": "accuracy"}),
                 "mrpc": ("MRPC", {"mrpc.accuracy": "accuracy", "mrpc.f1": "F1"})}


def adapter_rows() -> list[str]:
    """docs/adapters.md's accuracy table: full fine-tuning against LoRA per task and metric (test, mean ± std
    over seeds), their paired difference and the lr each method chose on dev; LoRA's variants (a longer
    budget, more layers adapted) in rows of their own, beside the plain LoRA rows."""
    result = load("adapters")
    if result is None:
        return []
    rows = ["| task, test metric | full fine-tuning | LoRA r 8 | LoRA - full, paired | lr chosen (full / LoRA) "
            "| seeds |", "|---|---|---|---|---|---|"]
    for task, (label, keys) in ADAPTER_TASKS.items():
        details = result["details"].get(task, {})
        for method in (m for m in ("lora", "lora_long", "lora_ffn") if "full" in details and m in details):
            full, lora = details["full"], details[method]
            diffs = result.get(f"paired_{method}_minus_full", {}).get(task)
            seeds = {len(values) for kind in (full, lora) for values in kind["per_seed"].values()}
            if diffs is None or len(seeds) > 1:  # a probe on fewer seeds than full: no mean beside full's
                continue
            budget = ("" if method == "lora" else " (LoRA also on intermediate.dense)" if method == "lora_ffn"
                      else f" (LoRA at {lora['epochs']:g} epochs, full at {full['epochs']:g})")
            for key, name in keys.items():
                diff = diffs[key]
                rows.append(f"| {label}, {name}{budget} | {full['metrics'][key]:.2f} ± {full['std'][key]:.2f} "
                            f"| {lora['metrics'][key]:.2f} ± {lora['std'][key]:.2f} "
                            f"| {diff['mean']:+.2f} ± {diff['std']:.2f} | {full['lr']:g} / {lora['lr']:g} "
                            f"| {len(diff['per_seed'])} |")
    return rows if len(rows) > 2 else []


def main() -> None:
    print("| data / model | intent acc | slot F1 | sentence acc |\n|---|---|---|---|")
    for name in ("atis", "snips"):
        path = RESULTS / f"{name}_joint.json"
        if not path.is_file():
            continue
        result = json.loads(path.read_text(encoding="utf-8"))
        epochs, seeds = result["settings"]["epochs"], len(result["seeds"])
        single = result["baseline"]["single_task"]
        budget = (f"lr {result['chosen_lr']:g} and epoch chosen on dev (up to {epochs:g})" if "chosen_lr" in result
                  else f"{epochs:g} epochs")
        print(row(f"{name.upper()}: mtl joint, MiniLM, {budget}, {seeds} seeds", result["metrics"], result["std"]))
        print(row(f"{name.upper()}: two single-task MiniLM models, same budget", single["mean"], single["std"]))
        base = load(f"{name}_joint_mpnet")
        if base is not None:
            print(row(f"{name.upper()}: mtl joint, MPNet-base, lr {base['chosen_lr']:g} chosen on dev, heads at "
                      f"{base['settings']['head_lr_scale']:g}x, up to {base['settings']['epochs']:g} epochs, "
                      f"{len(base['seeds'])} seeds, {'/'.join(sorted(set(base['precisions'])))}", base["metrics"],
                      base["std"]))
        print(row(f"{name.upper()}: JointBERT, BERT-base (published)",
                  result["baseline"]["published_jointbert_bert_base"], None))
    print("\n| task, split | MiniLM, mean ± std over seeds | command |\n|---|---|---|")
    print("\n".join(task_rows()))
    for extra in (ablation_rows(), two_task_rows(), chinese_rows(), tapt_rows(), adapter_rows()):
        if extra:
            print("\n" + "\n".join(extra))


if __name__ == "__main__":
    main()
