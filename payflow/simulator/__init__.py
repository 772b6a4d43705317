"""The payment simulator: realistic, deterministic traffic with injected faults and fraud."""
