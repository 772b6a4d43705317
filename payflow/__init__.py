"""payflow: streaming payment pipeline with masking on first touch, exactly-once dedup,
real-time fraud scoring and a PII-free, audit-grade warehouse."""

from payflow.runtime.process import refuse_stale

__version__ = "0.1.0"

refuse_stale()
