"""``python -m trainables.model.tiny FAMILY OUT``: a tiny randomly initialised model of a real
architecture family (Llama, Gemma, Mistral, Phi, DistilBERT), built from a config, with the
packaged MiniLM's tokenizer.

What every study runs on where the hub is out of reach (CI, offline machines): the same code
path as the real model (same classes, same peft targets, 4-bit quantization), seconds per trial.
Its scores mean nothing; use ``--model`` with it together with ``--smoke``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Optional

DECODER = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)


def _configs() -> dict[str, Callable[[int], Any]]:
    from transformers import (
        DistilBertConfig,
        GemmaConfig,
        LlamaConfig,
        MistralConfig,
        PhiConfig,
    )

    return {
        "llama": lambda vocab: LlamaConfig(vocab_size=vocab, **DECODER),
        "gemma": lambda vocab: GemmaConfig(vocab_size=vocab, head_dim=16, **DECODER),
        "mistral": lambda vocab: MistralConfig(vocab_size=vocab, sliding_window=None, **DECODER),
        "phi": lambda vocab: PhiConfig(vocab_size=vocab, **{k: v for k, v in DECODER.items()}),
        "distilbert": lambda vocab: DistilBertConfig(vocab_size=vocab, dim=64, hidden_dim=128, n_layers=2, n_heads=4, max_position_embeddings=512),
    }


FAMILIES = ("llama", "gemma", "mistral", "phi", "distilbert")


def as_decoder_tokenizer(tok: Any) -> Any:
    """The packaged (BERT) tokenizer made fit for a decoder LLM: decoders take no
    token_type_ids, which the BERT tokenizer would otherwise produce, and end on an EOS."""
    tok.model_input_names = ["input_ids", "attention_mask"]
    tok.eos_token = tok.sep_token
    return tok


def write_tiny_model(family: str, out: str | Path, seed: int = 0, dtype: str = "float32") -> Path:
    """Write the tiny model and tokenizer to ``out``; returns the folder. ``dtype``: the
    weights' dtype on disk, e.g. bfloat16 as Llama, Gemma and Mistral ship (transformers loads
    a checkpoint in its own dtype unless told otherwise)."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    from trainables.model.load import resolve

    configs = _configs()
    if family not in configs:
        raise ValueError(f"unknown family {family!r}: use one of {', '.join(configs)}")
    tok = AutoTokenizer.from_pretrained(resolve("packaged:all-minilm-l6-v2"))
    cfg = configs[family](tok.vocab_size)
    cfg.pad_token_id = tok.pad_token_id
    torch.manual_seed(seed)
    decoder = family != "distilbert"
    model = AutoModelForCausalLM.from_config(cfg) if decoder else AutoModel.from_config(cfg)
    if decoder:
        as_decoder_tokenizer(tok)
    out = Path(out)
    model.to(getattr(torch, dtype)).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainables.model.tiny", description=__doc__.splitlines()[0])
    p.add_argument("family", choices=FAMILIES)
    p.add_argument("out", help="folder to write")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="weights on disk (real Llama/Gemma/Mistral checkpoints are bfloat16)")
    args = p.parse_args(argv)
    from trainables.inference import quiet

    quiet()
    print(write_tiny_model(args.family, args.out, dtype=args.dtype))
    return 0


if __name__ == "__main__":
    sys.exit(main())
