"""Account types from the compacted reference topic: what a record sets, removes or is
refused as (payflow.pipeline.account_types). The topic itself, read by a real worker:
tests/integration/test_account_types_topic.py."""
from types import SimpleNamespace

from payflow import metrics
from payflow.pipeline.account_types import AccountTypes, parse_type


def record(key, value, offset=0):
    return SimpleNamespace(topic="t", partition=0, offset=offset, key=key, value=value)


def test_a_value_sets_a_type_a_tombstone_removes_it_and_anything_else_is_refused():
    assert parse_type(b'{"account_type": "payroll"}') == "payroll"
    assert parse_type(b'{"account_type": " Payout "}') == "payout"
    assert parse_type(None) == ""  # a tombstone
    for bad in (b"payroll", b"[]", b"{}", b'{"account_type": 3}', b'{"account_type": ""}',
                b'{"account_type": "   "}', b'{"account_type": "' + b"x" * 65 + b'"}', b"\xff"):
        assert parse_type(bad) is None, bad


def test_records_apply_in_order_and_a_refused_one_changes_nothing():
    types = AccountTypes("unused:9092", "t", seed={"acct_seeded": "billing"})
    refused = metrics.REFERENCE_RECORDS_REJECTED.labels(topic="t")
    before = refused._value.get()
    types.apply([record(b"acct_1", b'{"account_type": "payroll"}', 0),
                 record(b"acct_2", b'{"account_type": "payout"}', 1),
                 record(b"acct_1", b"not json", 2),        # refused: acct_1 stays payroll
                 record(None, b'{"account_type": "payout"}', 3),  # no key: refused
                 record(b"acct_2", None, 4),               # tombstone
                 record(b"acct_seeded", b'{"account_type": "marketplace"}', 5)])  # the topic wins
    assert types.types == {"acct_1": "payroll", "acct_seeded": "marketplace"}
    assert refused._value.get() - before == 2
