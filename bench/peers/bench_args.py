"""The model-shape flags every training benchmark takes, with `flatune bench train`'s defaults
(the 10M shape), so that every program is asked for the same model."""


def add_shape_args(p, vocab=True, seq=True):
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--ffn", type=int, default=688)
    if vocab:
        p.add_argument("--vocab", type=int, default=8000)
    if seq:
        p.add_argument("--seq", type=int, default=256)
