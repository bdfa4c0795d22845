"""The failure record: a sliding window per user, with the caller's clock."""

from capsudo.pwauth._throttle import FailureRecord


def test_a_user_is_locked_out_after_max_failures_until_the_oldest_leaves_the_window():
    record = FailureRecord(max_failures=3, window=60)
    for now in (0, 10, 20):
        assert record.retry_after("alice", now) == 0
        record.failed("alice", now)
    assert record.retry_after("alice", 21) == 39  # the failure at 0 leaves at 60
    assert record.retry_after("alice", 59.5) == 0.5
    assert record.retry_after("alice", 60) == 0
    record.failed("alice", 60)
    assert record.retry_after("alice", 61) == 9  # now the one at 10 is the oldest


def test_users_are_counted_apart():
    record = FailureRecord(max_failures=2, window=60)
    record.failed("alice", 0)
    record.failed("alice", 1)
    assert record.retry_after("alice", 2) > 0
    assert record.retry_after("bob", 2) == 0


def test_a_success_clears_the_record():
    record = FailureRecord(max_failures=2, window=60)
    record.failed("alice", 0)
    record.succeeded("alice")
    record.failed("alice", 1)
    assert record.retry_after("alice", 2) == 0


def test_old_failures_are_forgotten():
    record = FailureRecord(max_failures=2, window=10)
    record.failed("alice", 0)
    record.failed("bob", 0)
    assert record.failures("alice", 5) == 1
    assert record.failures("alice", 10) == 0
    assert record.retry_after("bob", 11) == 0
    assert len(record) == 0  # nothing kept for users with no recent failure


def test_zero_turns_the_lock_out_off():
    record = FailureRecord(max_failures=0, window=60)
    for now in range(100):
        record.failed("alice", now)
    assert record.retry_after("alice", 100) == 0
    assert len(record) == 0


def test_memory_per_user_is_bounded_by_max_failures():
    record = FailureRecord(max_failures=3, window=1e9)
    for now in range(1000):
        record.failed("alice", now)
    assert record.failures("alice", 1000) == 3
