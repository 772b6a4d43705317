"""Faust agents (payflow.agents): the payment pipeline and the erasure agent, over the pure
stages in payflow/stages/ and the runtime in payflow/runtime/."""
