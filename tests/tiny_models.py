"""Tiny real-architecture models built from configs, with tokenizers trained here: no download."""
from __future__ import annotations

from pathlib import Path

CORPUS = [
    "the sync daemon listens on port 7741", "backups run daily at three in the morning",
    "restore a backup archive with the restore command", "vault encryption uses a master key",
    "single sign on supports saml and oidc", "the cat sat on the mat", "dogs bark at night",
    "rate limits apply per token per minute", "webhooks are signed with a secret",
] * 4


def _tokenizer(folder: Path):
    from tokenizers import BertWordPieceTokenizer
    from transformers import PreTrainedTokenizerFast

    trainer = BertWordPieceTokenizer(lowercase=True)
    trainer.train_from_iterator(CORPUS, vocab_size=300, min_frequency=1)
    fast = PreTrainedTokenizerFast(tokenizer_object=trainer._tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", model_max_length=128,
                                   model_input_names=["input_ids", "token_type_ids", "attention_mask"])
    fast.save_pretrained(str(folder))
    return fast


def _bert_config(vocab_size: int, **extra):
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=128, **extra)


def tiny_sentence_model(folder: Path) -> Path:
    """A 2-layer BERT saved as a sentence-transformers model (mean pooling) in `folder`."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models
    from transformers import BertModel

    torch.manual_seed(0)
    raw = folder / "raw"
    tokenizer = _tokenizer(raw)
    BertModel(_bert_config(len(tokenizer))).save_pretrained(str(raw))
    transformer = models.Transformer(str(raw), max_seq_length=64)
    pooling = models.Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling]).save(str(folder / "st"))
    return folder / "st"


def tiny_cross_encoder(folder: Path) -> Path:
    """A 2-layer BERT sequence-pair classifier (1 label) in `folder`."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    tokenizer = _tokenizer(folder)
    BertForSequenceClassification(_bert_config(len(tokenizer), num_labels=1)).save_pretrained(str(folder))
    return folder
