"""Compliance: the PCI scan and GDPR erasure."""
