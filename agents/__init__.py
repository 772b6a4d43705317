"""Faust agents: thin glue around the pure stages in payflow/."""
