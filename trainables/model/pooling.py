"""Classify a text the way its encoder was trained to embed it: the mean of its token vectors.

Sentence encoders (all-MiniLM, all-mpnet, e5, gte) are trained on the mean of their last hidden
states over the real (non-padding) tokens; their checkpoints say so in sentence-transformers'
``modules.json`` -> ``1_Pooling/config.json``. transformers' ``BertForSequenceClassification``
reads the first token through the BERT pooler instead, a layer such checkpoints never trained:
on sentence pairs that costs ~0.08 accuracy against a plain run that pools as the model was
trained (issue 38). ModernBERT's config has this switch (``classifier_pooling``); for the
other encoder families this module adds it, as a subclass of the family's own classification
class that changes only how the sequence becomes one vector: same weights, same head, same
``from_pretrained``/``save_pretrained``/peft behaviour.

The file depends on torch and transformers only: ``sweeps.export`` copies it next to an
exported model as its remote code (the config's ``auto_map``), so plain transformers loads that
model with ``trust_remote_code=True``. Without that flag transformers would take the family's
own class, pool the first token and answer wrongly: the export's model card says so.
"""

from __future__ import annotations

import inspect
import json
from typing import Any, Optional

import torch
import transformers
from transformers.loss.loss_utils import ForSequenceClassificationLoss
from transformers.modeling_outputs import SequenceClassifierOutput

CONFIG_KEY = "classifier_pooling"  # the config attribute (ModernBERT's name for the same switch)
_BACKBONE_ARGS = ("token_type_ids", "position_ids", "inputs_embeds", "head_mask")


def checkpoint_pooling(path: str) -> Optional[str]:
    """What a sentence-transformers checkpoint pools with ("mean", "cls", "max", ...), or None
    where it ships no pooling config (a plain transformers checkpoint, or a hub id not cached
    and not reachable). ``path``: a folder or a hub id."""
    from transformers.utils import cached_file

    def read(name: str) -> Any:
        try:
            found = cached_file(path, name, _raise_exceptions_for_missing_entries=False, _raise_exceptions_for_connection_errors=False)
        except Exception:
            return None
        if not found:
            return None
        with open(found) as f:
            return json.load(f)

    modules = read("modules.json") or []
    pooling = next((m for m in modules if str(m.get("type", "")).endswith(".Pooling")), None)
    if pooling is None:
        return None
    # pooling_mode_cls_token, pooling_mode_mean_tokens, pooling_mode_max_tokens, ...: true/false
    config = read(f"{pooling['path']}/config.json".lstrip("/")) or {}
    modes = [k.removeprefix("pooling_mode_").removesuffix("_tokens").removesuffix("_token")
             for k, on in config.items() if k.startswith("pooling_mode_") and on is True]
    return modes[0] if len(modes) == 1 else None


def supports_mean(model_class: type) -> bool:
    """Whether ``mean_pooled`` can give this classification class mean pooling: its head is a
    ``classifier`` reading one vector (BERT, DistilBERT, RoBERTa, XLM-R, MPNet, ELECTRA...),
    not a ``score`` layer on the last token (decoders) or a class with its own switch."""
    try:
        source = inspect.getsource(model_class.__init__)
    except (OSError, TypeError):  # no source to read (a class built at run time): not one we know
        return False
    return "self.classifier" in source and CONFIG_KEY not in source


def native_switch(config: Any) -> bool:
    """The family's config already has the switch (ModernBERT): its own class pools."""
    return CONFIG_KEY in inspect.signature(type(config).__init__).parameters


class MeanPooledClassification:
    """Mixin over a ``...ForSequenceClassification`` class: its head reads the mask-weighted
    mean of the last hidden states instead of the first token."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        # The backbone's first-token pooler (BERT's dense + tanh) takes no part: dropped, so it
        # neither counts as a trained weight nor leaves DDP waiting for its gradients.
        backbone = getattr(self, self.base_model_prefix)
        if getattr(backbone, "pooler", None) is not None:
            backbone.pooler = None

    def forward(self, input_ids: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None, **kwargs: Any) -> SequenceClassifierOutput:
        backbone = getattr(self, self.base_model_prefix)
        extra = {k: kwargs[k] for k in _BACKBONE_ARGS if kwargs.get(k) is not None}
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **extra)[0]
        if attention_mask is None:
            pooled = hidden.mean(dim=1)
        else:
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        logits = self._classify(pooled)
        loss = ForSequenceClassificationLoss(labels, logits, self.config) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def _classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """The family's own head, fed the pooled vector where it would take the first token."""
        if hasattr(self, "pre_classifier"):  # DistilBERT: dense + ReLU + dropout + classifier
            pooled = self.dropout(torch.nn.functional.relu(self.pre_classifier(pooled)))
            return self.classifier(pooled)
        if hasattr(self.classifier, "out_proj"):  # RoBERTa-style heads take the sequence, read [:, 0]
            return self.classifier(pooled[:, None, :])
        return self.classifier(self.dropout(pooled))  # BERT-style: dropout + linear


_CLASSES: dict[type, type] = {}


def mean_pooled(model_class: type) -> type:
    """``model_class`` (e.g. ``BertForSequenceClassification``) with mean pooling; one class per
    family, named ``MeanPooled<Family>ForSequenceClassification``."""
    if model_class not in _CLASSES:
        name = f"MeanPooled{model_class.__name__}"
        _CLASSES[model_class] = type(name, (MeanPooledClassification, model_class), {"__module__": __name__})
    return _CLASSES[model_class]


def __getattr__(name: str) -> type:
    """``MeanPooledBertForSequenceClassification`` and its kind, by name: what an exported
    config's ``auto_map`` asks this file for."""
    prefix = "MeanPooled"
    if name.startswith(prefix) and hasattr(transformers, name[len(prefix):]):
        return mean_pooled(getattr(transformers, name[len(prefix):]))
    raise AttributeError(name)
