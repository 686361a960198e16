"""Turn a repository into an on-disk index: walk, chunk, embed, write FAISS + BM25 atomically."""
