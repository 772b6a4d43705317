"""The pure per-event stages: decode/validate, cards, currencies, mask, redact, dedup, fraud,
and the batch processor that runs them. No Kafka, no Faust, no I/O: plain typed Python that
setup.py compiles with mypyc, folder by folder."""
