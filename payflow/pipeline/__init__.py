"""The pipeline's orchestration, above the fence (payflow/runtime/): what the agent runs per
batch (runtime.py), the commit protocol (checkpoint.py), the outputs published (outputs.py),
the warehouse landing with retries (sink.py), and the assembly of these at the worker's start
(assemble.py), which is passed the app and the state tables rather than importing them."""
