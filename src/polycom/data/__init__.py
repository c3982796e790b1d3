"""polycom.data: corpora, tokenizers and memory-mapped token shards.

    from polycom.data import CorpusSpec, prepare_data, BatchSampler
    data = prepare_data(CorpusSpec("stdlib"), tokenizer="bpe", vocab_size=4096)
    sampler = BatchSampler(data.stream("train"), seq_len=256, seed=0)
"""

from ..extras import require

require("lab", "polycom.data")  # one line naming the extra, before a bare ModuleNotFoundError

from .corpus import STANDARD_CORPORA, CorpusSpec, DataError, Document, iter_documents, split_of
from .pipeline import PreparedData, corpus_hash, default_cache_dir, prepare_data, prepare_heldout
from .shards import BatchSampler, ShardWriter, TokenStream, token_dtype
from .tokenizer import ByteTokenizer, HFTokenizer, Tokenizer, load_tokenizer, train_bpe

__all__ = [
    "STANDARD_CORPORA", "CorpusSpec", "DataError", "Document", "iter_documents", "split_of",
    "PreparedData", "corpus_hash", "default_cache_dir", "prepare_data", "prepare_heldout",
    "BatchSampler", "ShardWriter", "TokenStream", "token_dtype",
    "ByteTokenizer", "HFTokenizer", "Tokenizer", "load_tokenizer", "train_bpe",
]
