"""`make fraud-eval`: labelled traffic written from published fraud typologies (not the
simulator's injector), scored by the real worker into the warehouse, then measured
(docs/fraud.md)."""
